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

Resumable: without `overwrite`, an output that is already complete is skipped, not failed: a local file that
`is_result_of` its input (4x its size, this tool's mark), or an object of that name that decodes at 4x the
input's size (objects are not checked for the mark: one put of complete bytes is the commit, so a decodable
object of the right size is taken as ours). Every run writes a JSONL report, one line per input, atomically
(REPORT_NAME in the output folder unless told otherwise).

Fault tolerance: inference actors are restarted (ACTOR_RESTARTS) and their in-flight batches retried; decode
and commit tasks are retried (TASK_RETRIES) when their worker process dies. A retry is harmless: decode only
reads, and a commit whose earlier attempt already renamed a complete result finds it and counts it written.
The report's `attempts` counts how many times each input entered inference.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import json
import logging
import os
import pickle
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from export.contract import SCALE
from export.errors import DeployError, first_line, one_line
from runtime.imageio import (
    DEFAULT_MAX_PIXELS,
    READABLE,
    image_size,
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
REPORT_NAME = "lsanet-report.jsonl"
ACTOR_RESTARTS = 3  # a killed inference actor comes back this many times; its in-flight batches are retried
TASK_RETRIES = 3  # decode and commit tasks (and actor tasks) rerun when their worker process dies


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
    actors: int | None = None  # inference actors; None: one per GPU, else one per node (see _actors)


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
        raise ClusterError(f"{uri}: cannot open this storage ({one_line(first_line(exc))})") from None


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


def _row(row: dict, started: float, status: str = "", image: bytes = b"", error: str = "", replace: bool = False) -> dict:
    return {**row, "status": status, "replace": replace, "image": image, "error": one_line(error) if error else "",
            "seconds": time.perf_counter() - started}  # fmt: skip


def _complete(source: Path, target: str, folder: str) -> bool:
    """Whether `target` already holds a complete result for `source` (see the module docstring)."""
    if not _is_remote(target):
        return Path(target).is_file() and is_result_of(source, target)
    from pyarrow import fs

    filesystem, path = _remote(target)
    if filesystem.get_file_info(path).type != fs.FileType.File:
        return False
    try:
        with _local_copy(target, tempfile.mkdtemp(dir=folder)) as previous:
            height, width = read_image(previous).colour.shape[:2]
        source_width, source_height = image_size(source)
    except (*FAILURES, OSError):
        return False
    return (width, height) == (source_width * SCALE, source_height * SCALE)


def decode(row: dict, overwrite: bool, max_pixels: int) -> dict:
    """CPU task: read and decode one input and check its output may be written (before inference is spent);
    an output already complete makes the row `skipped`."""
    started, source, target = time.perf_counter(), row["source"], row["target"]
    with tempfile.TemporaryDirectory(prefix="lsanet-") as folder:
        local = Path(source)
        try:
            with (_local_copy(source, folder) if _is_remote(source) else contextlib.nullcontext(local)) as local:
                if not overwrite and _complete(local, target, folder):
                    return _row(row, started, "skipped")
                image = read_image(local, max_pixels)
                check_fits(image, Path(source))  # here too: a result that cannot fit is never shipped to an actor
                if _is_remote(target):
                    may_replace = _may_replace_remote(local, target, overwrite, folder)
                else:
                    may_replace = check_output(local, Path(target), overwrite, set())
        except (*FAILURES, OSError) as exc:
            return _row(row, started, "failed", error=_renamed(exc, local, source))
    return _row(row, started, image=pickle.dumps(image), replace=may_replace)


class Attempts:
    """Actor: how many times each input has entered inference (a batch retried after its actor was killed
    counts again), and the process ids of the inference actors (for the report and the fault test)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.pids: list[int] = []
        self.running: set[str] = set()

    def start(self, source: str) -> int:
        self.counts[source] = self.counts.get(source, 0) + 1
        self.running.add(source)
        return self.counts[source]

    def finish(self, source: str) -> None:
        self.running.discard(source)

    def busy(self) -> bool:
        return bool(self.running)

    def worker(self, pid: int) -> None:
        self.pids.append(pid)

    def workers(self) -> list[int]:
        return list(self.pids)


class Infer:
    """Actor: one `Upscaler`, made once, x4 each decoded image of a batch (rows skipped or failed pass through)."""

    def __init__(self, settings: Settings, attempts: object) -> None:
        import ray

        from runtime.upscaler import Upscaler

        self.upscaler = Upscaler(
            settings.backend, settings.precision, settings.tile, settings.overlap, ckpt=settings.ckpt,
            onnx=settings.onnx, engines_dir=settings.engines_dir, max_pixels=settings.max_pixels,
        )  # fmt: skip
        self.attempts = attempts
        ray.get(attempts.worker.remote(os.getpid()))

    def __call__(self, batch: dict) -> dict:
        import ray

        images, errors, statuses = list(batch["image"]), list(batch["error"]), list(batch["status"])
        seconds, tries = list(batch["seconds"]), [0] * len(images)
        for i, data in enumerate(images):
            if statuses[i]:
                continue
            started = time.perf_counter()
            tries[i] = ray.get(self.attempts.start.remote(batch["source"][i]))
            try:
                images[i] = pickle.dumps(self.upscaler.upscale_image(pickle.loads(data)))
            except FAILURES as exc:
                images[i], errors[i], statuses[i] = b"", one_line(f"{batch['source'][i]}: {exc}"), "failed"
            self.attempts.finish.remote(batch["source"][i])
            seconds[i] += time.perf_counter() - started
        backend = [self.upscaler.backend] * len(images)
        return {**batch, "image": images, "error": errors, "status": statuses, "seconds": seconds,
                "attempts": tries, "backend": backend}  # fmt: skip


def _commit_local(source: str, target: str, image: object, replace: bool) -> None:
    """Write one local result; a complete result already there without `replace` is this commit's own
    earlier attempt (its worker died after the rename) and counts as written."""
    if not replace and Path(target).is_file() and is_result_of(source, target):
        return
    write_image(target, image, replace=replace)


def commit(row: dict) -> dict:
    """CPU task: encode one result and commit it whole; returns the row's outcome without the pixels."""
    started = time.perf_counter()
    outcome = {key: row[key] for key in ("source", "target", "status", "error", "seconds", "attempts", "backend")}
    if row["status"]:
        return outcome
    image, target = pickle.loads(row["image"]), row["target"]
    try:
        if not _is_remote(target):
            _commit_local(row["source"], target, image, bool(row["replace"]))
        else:
            _put(target, image, bool(row["replace"]))
        outcome["status"] = "written"
    except (*FAILURES, OSError) as exc:
        outcome["status"], outcome["error"] = "failed", one_line(str(exc))
    outcome["seconds"] += time.perf_counter() - started
    return outcome


def _put(target: str, image: object, replace: bool) -> None:
    """Encode one result and store it as an object with a single put of the complete bytes."""
    from pyarrow import fs

    with tempfile.TemporaryDirectory(prefix="lsanet-") as folder:
        encoded = Path(folder) / PurePosixPath(target).name
        write_image(encoded, image)
        data = encoded.read_bytes()
    filesystem, path = _remote(target)
    if not replace and filesystem.get_file_info(path).type != fs.FileType.NotFound:
        raise ClusterError(f"{target}: appeared while this run was working; not replaced")
    with filesystem.open_output_stream(path) as stream:  # the bytes are complete before the put starts
        stream.write(data)


class Report:
    """The JSONL report, written line by line to a temporary file and committed whole at the end (a local
    rename, or one put for an object)."""

    def __init__(self, where: str) -> None:
        self.where = where
        folder = None if _is_remote(where) else str(Path(where).parent)
        handle, self.temporary = tempfile.mkstemp(prefix=".lsanet-report-", suffix=".tmp", dir=folder)
        self.file = os.fdopen(handle, "w", encoding="utf-8")

    def add(self, input: str, output: str | None, status: str, **fields: object) -> None:
        line = {"input": input, "output": output, "status": status, "backend": "", "seconds": 0.0,
                "error": "", "attempts": 0, **fields}  # fmt: skip
        self.file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self.file.close()
        if not _is_remote(self.where):
            os.replace(self.temporary, self.where)
            return
        filesystem, path = _remote(self.where)
        with filesystem.open_output_stream(path) as stream:
            stream.write(Path(self.temporary).read_bytes())
        os.unlink(self.temporary)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


def report_path(output: str, job: Plan) -> str:
    """Where the report goes by default: REPORT_NAME in the output folder (beside a single output file)."""
    if not job.single or not job.pairs:
        return f"{output.rstrip('/')}/{REPORT_NAME}"
    target = job.pairs[0][1]
    folder = target.rsplit("/", 1)[0] if _is_remote(target) else str(Path(target).parent)
    return f"{folder}/{REPORT_NAME}"


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


def _actors(ray, requested: int | None) -> tuple[int, float]:
    """(actors, GPUs each): `requested`, else one per GPU where the cluster has GPUs, else one per node (a
    CPU backend uses every core of its node, so two on one node only compete: BENCHMARKS.md, Ray Data)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return requested or gpus, 1.0
    return requested or max(1, sum(1 for node in ray.nodes() if node.get("Alive"))), 0.0


def run_cluster(
    inputs: str,
    output: str,
    *,
    address: str | None = None,
    settings: Settings | None = None,
    options: Options | None = None,
    quiet: bool = False,
    report: str | None = None,
) -> int:
    """Upscale INPUT into OUTPUT on Ray; prints skipped files, each failure and `N written, M failed` on
    stderr, writes the JSONL report (`report`, else REPORT_NAME beside the outputs) and returns the exit
    status (1 if any image failed). ClusterError/DeployError for setup errors."""
    settings, options = settings or Settings(), options or Options()
    from runtime.selection import resolve_model

    as_path = lambda p: None if p is None else Path(p)
    resolve_model(as_path(settings.ckpt), as_path(settings.onnx), None, as_path(settings.engines_dir), None)
    job = plan(inputs, output, options)  # refuses collisions before Ray starts
    job.skipped = [(s, why) for s, why in job.skipped if PurePosixPath(s).name != REPORT_NAME]
    log = Report(report or report_path(output, job))
    counts = {"written": 0, "skipped": 0, "failed": 0}
    first = ""
    try:
        for source, why in job.skipped:
            print(one_line(f"skipped {source}: {why}"), file=sys.stderr)
            log.add(source, None, "skipped", error=one_line(why))
        with _ray(address, quiet) as ray:
            for row in _execute(ray, job, settings, options):
                counts[row["status"]] += 1
                if row["status"] == "failed":
                    print(f"error: {row['error']}", file=sys.stderr)
                first = first or (row["target"] if row["status"] == "written" else "")
                log.add(row["source"], row["target"], row["status"], backend=row["backend"] or "",
                        seconds=round(float(row["seconds"]), 4), error=row["error"], attempts=int(row["attempts"] or 0))  # fmt: skip
    except BaseException:
        log.discard()
        raise
    log.close()
    if not quiet or counts["failed"] or job.skipped:
        done = f"{counts['written']} written, {counts['failed']} failed"
        done += f", {counts['skipped']} skipped (complete)" if counts["skipped"] else ""
        done += f", {len(job.skipped)} skipped" if job.skipped else ""
        print(f"{done}: {first}" if job.single and first else done, file=sys.stderr)
    return 1 if counts["failed"] else 0


def _execute(ray, job: Plan, settings: Settings, options: Options) -> Iterator[dict]:
    """The pipeline on Ray Data: decode (task) -> x4 (actor pool) -> commit (task); one outcome per pair."""
    if not job.pairs:
        return
    actors, gpus = _actors(ray, settings.actors)
    attempts = ray.remote(num_cpus=0)(Attempts).options(name=f"lsanet-attempts-{uuid.uuid4().hex[:12]}").remote()
    rows = [{"source": s, "target": t} for s, t in job.pairs]
    dataset = (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
        .map(decode, fn_kwargs={"overwrite": options.overwrite, "max_pixels": settings.max_pixels},
             max_retries=TASK_RETRIES)
        .map_batches(Infer, fn_constructor_kwargs={"settings": settings, "attempts": attempts}, batch_size=1,
                     compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus, num_cpus=0 if gpus else 1,
                     max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)
        .map(commit, max_retries=TASK_RETRIES)
    )  # fmt: skip
    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayError as exc:
        raise ClusterError(f"the Ray job failed: {one_line(first_line(exc))}") from None
    finally:
        ray.kill(attempts)
