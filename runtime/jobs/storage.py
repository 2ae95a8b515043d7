"""Object storage (`s3://`, `gs://`) as inputs and targets of a run, through pyarrow's filesystems (what Ray
Data itself reads them with): listing an INPUT prefix or glob, reading an object as a local file, and
`ObjectTarget`, the per-file step's target for an object (runtime/jobs/step.py)."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.descriptor import SCALE
from core.errors import ClusterError, OutputError, first_line, one_line
from runtime.images.io import (
    READABLE,
    Image,
    is_result_of,
    skip_reason,
    write_image,
)
from runtime.jobs.step import FAILURES


@functools.lru_cache(maxsize=16)
def _bucket_filesystem(root: str):  # -> pyarrow.fs.FileSystem; one per bucket and process (S3 resolves the region)
    from pyarrow import fs

    return fs.FileSystem.from_uri(root)[0]


def remote(uri: str) -> tuple[object, str]:
    """(pyarrow filesystem, path on it) for an `s3://bucket/key` or `gs://bucket/key` URI."""
    scheme, rest = uri.split("://", 1)
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ClusterError(f"{uri}: no bucket in this address")
    try:
        return _bucket_filesystem(f"{scheme}://{bucket}"), rest.rstrip("/")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for bad URIs and credentials
        raise ClusterError(f"{uri}: cannot open this storage ({one_line(first_line(exc))})") from None


def remote_inputs(spec: str) -> tuple[list[str], bool, list[tuple[str, str]]]:
    """(image URIs, one file?, skipped with reasons) for a remote INPUT: an object, a folder prefix, or a glob."""
    from pyarrow import fs

    filesystem, path = remote(spec)
    scheme = spec.split("://", 1)[0]
    pattern = None
    if glob.has_magic(path):
        path, pattern = path.rsplit("/", 1)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.File and pattern is None:
        return [spec], True, []
    if info.type != fs.FileType.Directory:
        raise ClusterError(f"{spec}: no such object or folder")
    files, skipped = [], []
    for entry in sorted(filesystem.get_file_info(fs.FileSelector(path)), key=lambda e: e.path):
        if entry.type != fs.FileType.File or (pattern and not fnmatch.fnmatchcase(entry.base_name, pattern)):
            continue
        uri = f"{scheme}://{entry.path}"
        reason = skip_reason(entry.path)
        (skipped.append((uri, reason)) if reason else files.append(uri))
    if not files:
        raise ClusterError(f"{spec}: no images here ({', '.join(sorted(READABLE))})")
    return files, False, skipped


@contextlib.contextmanager
def local_copy(uri: str, folder: str) -> Iterator[Path]:
    """A remote object as a local file with the same name (imageio reads files; its messages name them)."""
    filesystem, path = remote(uri)
    local = Path(folder) / PurePosixPath(path).name
    with filesystem.open_input_file(path) as f:
        local.write_bytes(f.read())
    yield local


@dataclass(frozen=True)
class ObjectTarget:
    """A result stored as an object, committed by one put of the complete encoded bytes. As for a local
    file, an object is this tool's result (complete, or one --overwrite may replace) only when it is
    `scale` times its input's size and carries this tool's mark (runtime/images/io.py is_result_of): a
    foreign photo that happens to be 4x is neither skipped as complete nor replaced."""

    uri: str
    scale: float = SCALE

    def check(self, source: Path, overwrite: bool, inputs: set[Path]) -> tuple[int, int] | None:
        """As LocalFile's: None when nothing is there, else the earlier result's version (size, mtime) as
        checked, which the commit looks for again just before its put."""
        version = self._version()
        if version is None:
            return None
        if not overwrite:  # prepare skips a complete result first: what is here is something else
            raise OutputError(f"{self.uri}: exists and is not a complete earlier x4 result of {source.name}; not replaced")
        with tempfile.TemporaryDirectory(prefix="lsanet-") as folder, local_copy(self.uri, folder) as previous:
            if not is_result_of(source, previous, self.scale):
                raise OutputError(f"{self.uri}: exists and is not an earlier x4 result of {source.name}; not replaced")
        return version

    def complete(self, source: Path) -> bool:
        from pyarrow import fs

        filesystem, path = remote(self.uri)
        if filesystem.get_file_info(path).type != fs.FileType.File:
            return False
        try:
            with tempfile.TemporaryDirectory(prefix="lsanet-") as folder, local_copy(self.uri, folder) as previous:
                return is_result_of(source, previous, self.scale)
        except (*FAILURES, OSError):
            return False

    def _version(self) -> tuple[int, int] | None:
        from pyarrow import fs

        filesystem, path = remote(self.uri)
        info = filesystem.get_file_info(path)
        return None if info.type == fs.FileType.NotFound else (info.size, info.mtime_ns)

    def commit(self, result: Image, replace: tuple[int, int] | None) -> None:
        """One put of the complete bytes, after looking again at what is there: nothing, or the very version
        that was checked. Object stores here offer no conditional put, so a writer between that look and
        the put is not seen: the window is the put's own duration."""
        with tempfile.TemporaryDirectory(prefix="lsanet-") as folder:
            encoded = Path(folder) / PurePosixPath(self.uri).name
            write_image(encoded, result)
            data = encoded.read_bytes()
        now = self._version()
        if now is not None and replace is None:
            raise OutputError(f"{self.uri}: appeared while this run was working; not replaced")
        if now is not None and now != replace:
            raise OutputError(f"{self.uri}: changed while this run was working (not the earlier result that was checked); not replaced")
        filesystem, path = remote(self.uri)
        with filesystem.open_output_stream(path) as stream:  # the bytes are complete before the put starts
            stream.write(data)
