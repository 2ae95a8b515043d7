"""`upscale.py INPUT OUTPUT --cluster ray`: the same job as a local folder run, on a Ray cluster with Ray Data.

Ray Data is the engine: the planned (input, output) pairs are a dataset; decoding and encoding are CPU
tasks and inference runs in a pool of actors, one `Upscaler` each, with Ray Data's streaming backpressure
between the stages and its actor restarts and task retries. Inputs and outputs are local or shared paths,
or object storage (`s3://`, `gs://`) through pyarrow's filesystems, as Ray Data reads them.

The guarantees are those of the local run (runtime/job.py): outputs planned and collisions refused before
any work; an input never written; an existing output replaced only with `overwrite` and only when it is an
earlier result for that input; each result committed atomically (a local file by imageio's exclusive
rename, an object by one put of the complete encoded bytes); every failure listed with its one-line reason.
Ray's `read_binary_files` is not used: one unreadable file fails its whole read, where here it fails only
that file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import logging
import os
import pickle
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from export.errors import DeployError, one_line
from runtime.imageio import (
    DEFAULT_MAX_PIXELS,
    READABLE,
    is_result_of,
    read_image,
    skip_reason,
    write_image,
)
from runtime.job import (
    FAILURES,
    Options,
    check_fits,
    check_output,
    prepare_outputs,
    previous_results,
    resolve_inputs,
)

REMOTE = ("s3://", "gs://", "gcs://")


class ClusterError(DeployError):
    """A problem with a cluster run as a whole: Ray missing or unreachable, inputs or outputs unusable."""


@dataclass
class Settings:
    """What each actor's `Upscaler` is built from (upscale.py's model and speed options)."""

    backend: str = "auto"
    precision: str | None = None
    tile: int | None = None
    overlap: int | None = None
    ckpt: str | None = None
    onnx: str | None = None
    engines_dir: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


def _is_remote(spec: str) -> bool:
    return spec.lower().startswith(REMOTE)


@functools.lru_cache(maxsize=16)
def _bucket_filesystem(root: str):  # -> pyarrow.fs.FileSystem; one per bucket and process (S3 resolves the region)
    from pyarrow import fs

    return fs.FileSystem.from_uri(root)[0]


def _remote(uri: str) -> tuple[object, str]:
    """(pyarrow filesystem, path on it) for an `s3://bucket/key` or `gs://bucket/key` URI."""
    scheme, rest = uri.split("://", 1)
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ClusterError(f"{uri}: no bucket in this address")
    try:
        return _bucket_filesystem(f"{scheme}://{bucket}"), rest.rstrip("/")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for bad URIs and credentials
        raise ClusterError(f"{uri}: cannot open this storage ({one_line(str(exc).splitlines()[0])})") from None


def _remote_inputs(spec: str) -> tuple[list[str], bool, list[tuple[str, str]]]:
    """(image URIs, one file?, skipped with reasons) for a remote INPUT: an object, a folder prefix, or a glob."""
    from pyarrow import fs

    filesystem, path = _remote(spec)
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


def _remote_targets(sources: list[str], single: bool, output: str, options: Options) -> list[str]:
    """Output URIs by upscale.py's naming rules (runtime/job.py output_for), collisions refused."""
    ext = options.ext if options.ext is None or options.ext.startswith(".") else f".{options.ext}"
    if ext is not None and ext.lower() not in READABLE:
        raise ClusterError(f"--ext {options.ext}: cannot write that format (choose from {', '.join(sorted(READABLE))})")
    scheme, key = output.split("://", 1)
    if single and not key.endswith("/"):
        targets = [f"{scheme}://{PurePosixPath(key).with_suffix(ext)}" if ext else output]
    else:
        names = [f"{PurePosixPath(s).stem}{options.suffix}{ext or PurePosixPath(s).suffix}" for s in sources]
        targets = [f"{output.rstrip('/')}/{name}" for name in names]
    seen: dict[str, str] = {}
    for source, target in zip(sources, targets):
        if PurePosixPath(target).suffix.lower() not in READABLE:
            raise ClusterError(f"{target}: unknown output format (use one of {', '.join(sorted(READABLE))})")
        if target in seen:
            raise ClusterError(f"{seen[target]} and {source} would both write {target}; nothing was done")
        seen[target] = source
    return targets


@dataclass
class Plan:
    """Every input with its output, and the inputs passed over with their reasons."""

    pairs: list[tuple[str, str]]
    skipped: list[tuple[str, str]]
    single: bool


def plan(inputs: str, output: str, options: Options) -> Plan:
    """Resolve INPUT and OUTPUT (local or remote) and check every output before any work, as a local run does;
    an output that is also an input is refused here for all of them at once."""
    if _is_remote(inputs):
        sources, single, skipped = _remote_inputs(inputs)
    else:
        found = resolve_inputs(inputs)
        sources, single = [str(p) for p in found.files], found.single
        skipped = [(str(p), why) for p, why in found.skipped]
    if not single:
        earlier = set(previous_results([PurePosixPath(s) for s in sources], options.suffix))
        sources = [s for s in sources if PurePosixPath(s) not in earlier]
    if _is_remote(output):
        targets = _remote_targets(sources, single, output, options)
    else:
        local = replace(options, output=Path(output))
        targets = [str(t) for t in prepare_outputs([Path(s) for s in sources], single, local)]
        inputs_here = {str(Path(s).resolve()) for s in sources if not _is_remote(s)}
        for source, target in zip(sources, targets):
            if str(Path(target).resolve()) in inputs_here:
                raise ClusterError(f"{target}: is also one of the inputs; choose another --suffix or folder")
    return Plan(list(zip(sources, targets)), skipped, single)


@contextlib.contextmanager
def _local_copy(uri: str, folder: str) -> Iterator[Path]:
    """A remote object as a local file with the same name (imageio reads files; its messages name them)."""
    filesystem, path = _remote(uri)
    local = Path(folder) / PurePosixPath(path).name
    with filesystem.open_input_file(path) as f:
        local.write_bytes(f.read())
    yield local


def _renamed(exc: Exception, local: Path, name: str) -> str:
    return str(exc).replace(str(local), name)


def _may_replace_remote(source: Path, target: str, overwrite: bool, folder: str) -> bool:
    """check_output for an object: refuse an existing one without `overwrite`, or one that is not this tool's
    result for the source; returns whether the put may replace an object."""
    from pyarrow import fs

    filesystem, path = _remote(target)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return False
    if not overwrite:
        raise ClusterError(f"{target}: exists (use --overwrite to replace an earlier result)")
    with _local_copy(target, tempfile.mkdtemp(dir=folder)) as previous:
        if not is_result_of(source, previous):
            raise ClusterError(f"{target}: exists and is not an earlier x4 result of {source.name}; not replaced")
    return True


def _failed(row: dict, message: str) -> dict:
    return {**row, "replace": False, "image": b"", "error": one_line(message)}


def decode(row: dict, overwrite: bool, max_pixels: int) -> dict:
    """CPU task: read and decode one input and check its output may be written (before inference is spent)."""
    source, target = row["source"], row["target"]
    with tempfile.TemporaryDirectory(prefix="lsanet-") as folder:
        local = Path(source)
        try:
            with (_local_copy(source, folder) if _is_remote(source) else contextlib.nullcontext(local)) as local:
                image = read_image(local, max_pixels)
                check_fits(image, Path(source))
                if _is_remote(target):
                    may_replace = _may_replace_remote(local, target, overwrite, folder)
                else:
                    may_replace = check_output(local, Path(target), overwrite, set())
        except (*FAILURES, OSError) as exc:
            return _failed(row, _renamed(exc, local, source))
    return {**row, "replace": may_replace, "image": pickle.dumps(image), "error": ""}


class Infer:
    """Actor: one `Upscaler`, made once, x4 each decoded image of a batch (rows that failed pass through)."""

    def __init__(self, settings: Settings) -> None:
        from runtime.upscaler import Upscaler

        self.upscaler = Upscaler(
            settings.backend, settings.precision, settings.tile, settings.overlap, ckpt=settings.ckpt,
            onnx=settings.onnx, engines_dir=settings.engines_dir, max_pixels=settings.max_pixels,
        )  # fmt: skip

    def __call__(self, batch: dict) -> dict:
        images, errors = list(batch["image"]), list(batch["error"])
        for i, (data, error) in enumerate(zip(images, errors)):
            if error:
                continue
            try:
                images[i] = pickle.dumps(self.upscaler.upscale_image(pickle.loads(data)))
            except FAILURES as exc:
                images[i], errors[i] = b"", one_line(f"{batch['source'][i]}: {exc}")
        return {**batch, "image": images, "error": errors}


def commit(row: dict) -> dict:
    """CPU task: encode one result and commit it whole; returns the row's outcome without the pixels."""
    outcome = {"source": row["source"], "target": row["target"], "error": row["error"]}
    if row["error"]:
        return outcome
    image, target = pickle.loads(row["image"]), row["target"]
    try:
        if not _is_remote(target):
            write_image(target, image, replace=bool(row["replace"]))
            return outcome
        from pyarrow import fs

        with tempfile.TemporaryDirectory(prefix="lsanet-") as folder:
            encoded = Path(folder) / PurePosixPath(target).name
            write_image(encoded, image)
            data = encoded.read_bytes()
        filesystem, path = _remote(target)
        if not row["replace"] and filesystem.get_file_info(path).type != fs.FileType.NotFound:
            raise ClusterError(f"{target}: appeared while this run was working; not replaced")
        with filesystem.open_output_stream(path) as stream:  # the bytes are complete before the put starts
            stream.write(data)
    except (*FAILURES, OSError) as exc:
        outcome["error"] = one_line(str(exc))
    return outcome


@contextlib.contextmanager
def _ray(address: str | None, quiet: bool) -> Iterator[object]:
    """Ray connected: to `address`, else $RAY_ADDRESS, else a local Ray started here (and shut down after).
    A Ray this process already started (a test's) is used as it is."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster ray needs Ray Data: pip install -e '.[cluster]'") from None
    for name in ("ray", "ray.data"):  # Ray Data configures its own logger; INFO lines are its chatter
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = not quiet
    ray.data.DataContext.get_current().print_on_execution_start = False
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS")
    where = {"address": address} if address else {"num_cpus": os.cpu_count(), "include_dashboard": False}
    try:
        ray.init(**where, log_to_driver=False, logging_level=logging.ERROR if quiet else logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {one_line(str(exc))}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _actors(ray) -> tuple[int, float]:
    """(actors, GPUs each): one per GPU where the cluster has GPUs, else one per node (a CPU backend uses
    every core of its node, so two on one node would only compete)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return gpus, 1.0
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive"))), 0.0


def run_cluster(
    inputs: str,
    output: str,
    *,
    address: str | None = None,
    settings: Settings | None = None,
    options: Options | None = None,
    quiet: bool = False,
) -> int:
    """Upscale INPUT into OUTPUT on Ray; prints skipped files, each failure and `N written, M failed` on
    stderr and returns the exit status (1 if any image failed). ClusterError/DeployError for setup errors."""
    settings, options = settings or Settings(), options or Options()
    from runtime.selection import resolve_model

    as_path = lambda p: None if p is None else Path(p)
    resolve_model(as_path(settings.ckpt), as_path(settings.onnx), None, as_path(settings.engines_dir), None)
    job = plan(inputs, output, options)  # refuses collisions before Ray starts
    for source, why in job.skipped:
        print(one_line(f"skipped {source}: {why}"), file=sys.stderr)
    written, failed = [], []
    with _ray(address, quiet) as ray:
        actors, gpus = _actors(ray)
        rows = [{"source": s, "target": t} for s, t in job.pairs]
        dataset = (
            ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
            .map(decode, fn_kwargs={"overwrite": options.overwrite, "max_pixels": settings.max_pixels})
            .map_batches(Infer, fn_constructor_kwargs={"settings": settings}, batch_size=1,
                         compute=ray.data.ActorPoolStrategy(size=actors),
                         num_gpus=gpus, num_cpus=0 if gpus else 1)
            .map(commit)
        )
        for row in dataset.iter_rows():
            if row["error"]:
                failed.append((row["source"], row["error"]))
                print(f"error: {row['error']}", file=sys.stderr)
            else:
                written.append(row["target"])
    if not quiet or failed or job.skipped:
        done = f"{len(written)} written, {len(failed)} failed" + (f", {len(job.skipped)} skipped" if job.skipped else "")
        print(f"{done}: {written[0]}" if job.single and written else done, file=sys.stderr)
    return 1 if failed else 0
