"""Atomic file writing and hashing, shared by the exporter and the runtime."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


TEMP_MARK = ".part"


def is_temporary(path: str | Path) -> bool:
    """Whether `path` is one of `atomic_path`'s temporaries (`.NAME.XXXX.part.EXT`): never an input."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK + "." in name


@contextlib.contextmanager
def atomic_path(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path in `path`'s directory (same suffix, so writers that look at it still work);
    move it onto `path` if the block succeeds, delete it otherwise. Readers never see a partial file.

    With `replace` False the commit is an exclusive hard link: FileExistsError if `path` appeared meanwhile
    (another process wrote it), so two concurrent runs can never silently replace each other's result.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{TEMP_MARK}{path.suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any new file
    try:
        yield Path(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
