"""`upscale.py INPUT OUTPUT --cluster ray`: the same job as a local folder run, on a Ray cluster with Ray Data.

Ray Data is the engine: the planned (input, output) pairs are a dataset; decoding and encoding are CPU
tasks and inference runs in a pool of actors, one `Upscaler` each, with Ray Data's streaming backpressure
between the stages and its actor restarts and task retries. Inputs and outputs are local or shared paths,
or object storage (`s3://`, `gs://`) through pyarrow's filesystems, as Ray Data reads them.

The guarantees are those of the local run, through the same per-file step (runtime/jobs/step.py): outputs planned and collisions refused before
any work; an input never written; an existing output replaced only with `overwrite` and only when it is an
earlier result for that input; each result committed atomically (a local file by imageio's exclusive
rename, an object by one put of the complete encoded bytes); every failure listed with its one-line reason.
Ray's `read_binary_files` is not used: one unreadable file fails its whole read, where here it fails only
that file.

Resumable: without `overwrite`, an output that is already complete (its target's `complete`: a local file
or an object 4x its input's size with this tool's mark; runtime/jobs/storage.py) is
skipped, not failed. Every run writes a JSONL report, one line per input, atomically
(REPORT_NAME in the output folder unless told otherwise).

Fault tolerance is Ray Data's own, with its defaults (no deprecated per-call retry keywords): an inference
actor whose process dies is restarted and its in-flight batches retried; decode and commit tasks are
retried (Ray's 3 retries) when their worker process dies. A retry is harmless: decode only
reads, and a commit whose earlier attempt already renamed a complete result finds it and counts it written.
The report's `attempts` counts how many times each input entered inference.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from core.descriptor import SCALE
from core.errors import ClusterError, first_line, one_line
from core.files import TEMP_MARK, Replace
from core.signals import STOP_SIGNALS
from runtime.jobs.plan import RunPlan, is_remote, make_output_folder, plan_run
from runtime.jobs.step import FAILURES, Complete, LocalFile, Target, prepare
from runtime.jobs.storage import ObjectTarget, local_copy, remote
from runtime.memory import check_fits
from runtime.settings import Settings

REPORT_NAME = "lsanet-report.jsonl"


def _target(target: str, scale: float) -> Target:
    return ObjectTarget(target, scale) if is_remote(target) else LocalFile(Path(target), scale)


def plan(inputs: str, output: str, settings: Settings) -> RunPlan:
    """The local run's plan (runtime/jobs/plan.py plan_run) as strings, for Ray rows; an output that is also
    an input is refused here for all of them at once."""
    run_plan = plan_run(inputs, output if is_remote(output) else Path(output), settings)
    pairs = [(str(s), str(t)) for s, t in run_plan.pairs]
    if not is_remote(output):
        make_output_folder(Path(output), run_plan.single, [Path(t) for _, t in pairs])
        inputs_here = {str(Path(s).resolve()) for s, _ in pairs if not is_remote(s)}
        for _, target in pairs:
            if str(Path(target).resolve()) in inputs_here:
                raise ClusterError(f"{target}: is also one of the inputs; choose another --suffix or folder")
    refused = [(str(s), why) for s, why in run_plan.refused]
    return RunPlan(pairs, run_plan.single, [(str(s), why) for s, why in run_plan.skipped], run_plan.earlier, refused)


def _renamed(exc: Exception, local: Path, name: str) -> str:
    return str(exc).replace(str(local), name)


def _row(row: dict, started: float, status: str = "", image: bytes = b"", error: str = "", replace: Replace = None) -> dict:
    # `replace` travels pickled: what the commit may replace (core/files.py Checked, or an object's version).
    return {**row, "status": status, "replace": pickle.dumps(replace), "image": image, "error": one_line(error) if error else "",
            "seconds": time.perf_counter() - started}  # fmt: skip


def decode(row: dict, overwrite: bool, max_pixels: int, scale: float) -> dict:
    """CPU task: the step's prepare phase for one input (its output checked, the input decoded) before
    inference is spent; an output already complete makes the row `skipped`."""
    started, source, target = time.perf_counter(), row["source"], _target(row["target"], scale)
    with tempfile.TemporaryDirectory(prefix="lsanet-") as folder:
        local = Path(source)
        try:
            with (local_copy(source, folder) if is_remote(source) else contextlib.nullcontext(local)) as local:
                try:
                    prepared = prepare(local, target, overwrite, set(), max_pixels)
                except Complete:
                    return _row(row, started, "skipped")
                image = prepared.image
                # here too: a result that cannot fit is never shipped to an actor
                check_fits(*image.colour.shape[:2], image.planes, image.dtype.itemsize, source, max(scale, SCALE))
        except (*FAILURES, OSError) as exc:
            return _row(row, started, "failed", error=_renamed(exc, local, source))
    return _row(row, started, image=pickle.dumps(image), replace=prepared.replace)


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

        self.upscaler = Upscaler(settings).open()
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


def commit(row: dict) -> dict:
    """CPU task: the step's commit phase (encode one result and commit it whole); returns the row's outcome
    without the pixels. A complete result already there without `replace` is this commit's own earlier
    attempt (its worker died after the rename) and counts as written."""
    started = time.perf_counter()
    outcome = {key: row[key] for key in ("source", "target", "status", "error", "seconds", "attempts", "backend")}
    if row["status"]:
        return outcome
    image, replace = pickle.loads(row["image"]), pickle.loads(row["replace"])
    target = _target(row["target"], image.outscale)
    try:
        if replace or is_remote(row["target"]) or not target.complete(Path(row["source"])):
            target.commit(image, replace)
        outcome["status"] = "written"
    except (*FAILURES, OSError) as exc:
        outcome["status"], outcome["error"] = "failed", one_line(str(exc))
    outcome["seconds"] += time.perf_counter() - started
    return outcome


class Report:
    """The JSONL report, written line by line to a temporary file and committed whole at the end (a local
    rename, or one put for an object)."""

    def __init__(self, where: str) -> None:
        self.where = where
        folder = None if is_remote(where) else str(Path(where).parent)
        handle, self.temporary = tempfile.mkstemp(prefix=".lsanet-report-", suffix=".tmp", dir=folder)
        self.file = os.fdopen(handle, "w", encoding="utf-8")

    def add(self, input: str, output: str | None, status: str, **fields: object) -> None:
        line = {"input": input, "output": output, "status": status, "backend": "", "seconds": 0.0,
                "error": "", "attempts": 0, **fields}  # fmt: skip
        self.file.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self.file.close()
        if not is_remote(self.where):
            os.replace(self.temporary, self.where)
            return
        filesystem, path = remote(self.where)
        with filesystem.open_output_stream(path) as stream:
            stream.write(Path(self.temporary).read_bytes())
        os.unlink(self.temporary)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


def report_path(output: str, job: RunPlan) -> str:
    """Where the report goes by default: REPORT_NAME in the output folder (beside a single output file)."""
    if not job.single or not job.pairs:
        return f"{output.rstrip('/')}/{REPORT_NAME}"
    target = job.pairs[0][1]
    folder = target.rsplit("/", 1)[0] if is_remote(target) else str(Path(target).parent)
    return f"{folder}/{REPORT_NAME}"


@contextlib.contextmanager
def _ray(address: str | None, quiet: bool) -> Iterator[object]:
    """Ray connected: to `address`, else $RAY_ADDRESS, else a local Ray started here (and shut down after).
    A Ray this process already started (a test's) is used as it is."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster ray needs Ray Data: pip install -e '.[cluster]'") from None
    level = logging.ERROR if quiet else logging.WARNING
    # Ray Data reconfigures its loggers whenever a dataset starts executing (ray/data/_internal/logging.py
    # configure_logging), taking RAY_DATA_LOG_LEVEL over its own config: set for this run only.
    previous = os.environ.get("RAY_DATA_LOG_LEVEL")
    os.environ["RAY_DATA_LOG_LEVEL"] = logging.getLevelName(level)
    try:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(level)
        ray.data.DataContext.get_current().enable_progress_bars = not quiet
        ray.data.DataContext.get_current().print_on_execution_start = False
        if ray.is_initialized():
            yield ray
            return
        yield from _started(ray, address, quiet)
    finally:
        if previous is None:
            os.environ.pop("RAY_DATA_LOG_LEVEL", None)
        else:
            os.environ["RAY_DATA_LOG_LEVEL"] = previous


def _started(ray, address: str | None, quiet: bool) -> Iterator[object]:
    """A Ray of this run's own: connected to `address`, $RAY_ADDRESS, or started here; shut down after."""
    address = address or os.environ.get("RAY_ADDRESS")
    where = {"address": address} if address else {"num_cpus": os.cpu_count(), "include_dashboard": False}
    try:
        with _our_signals():
            ray.init(**where, log_to_driver=False, logging_level=logging.ERROR if quiet else logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {one_line(str(exc))}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _our_signals() -> Iterator[None]:
    """Keep this process's stop handlers (core/signals.py: a clean stop, exit 128 + signal) over what ray.init
    installs for SIGTERM: a Python handler that exits 15, and Ray's C++ failure handler that prints a stack
    dump. Handlers belong to the main thread; a library caller on another thread keeps Ray's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in ours.items():
        if handler is not None:
            signal.signal(signum, handler)


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
    settings: Settings | None = None,
    *,
    address: str | None = None,
    actors: int | None = None,
    report: str | None = None,
) -> int:
    """Upscale INPUT into OUTPUT on Ray; prints skipped files, each failure and `N written, M failed` on
    stderr, writes the JSONL report (`report`, else REPORT_NAME beside the outputs) and returns the exit
    status (1 if any image failed). `actors`: inference actors (None: one per GPU, else one per node).
    ClusterError/DeployError for setup errors."""
    settings = settings or Settings()
    from runtime.model.source import resolve_model

    resolve_model(settings.ckpt, settings.onnx, None, settings.engines_dir, None)
    job = plan(inputs, output, settings)  # refuses collisions before Ray starts
    job.skipped = [(s, why) for s, why in job.skipped if PurePosixPath(s).name != REPORT_NAME]
    where = report or report_path(output, job)
    with _one_run_at_a_time(None if is_remote(where) else Path(where).parent):
        return _run(job, where, settings, address, actors)


def _run(job: RunPlan, where: str, settings: Settings, address: str | None, actors: int | None) -> int:
    quiet = settings.quiet
    log = Report(where)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    first = ""
    try:
        for source, why in job.skipped:
            print(one_line(f"skipped {source}: {why}"), file=sys.stderr)
            log.add(source, None, "skipped", error=one_line(why))
        for source, why in job.refused:  # decided from headers before Ray starts (runtime/jobs/plan.py)
            print(f"error: {one_line(why)}", file=sys.stderr)
            log.add(source, None, "failed", error=one_line(why))
            counts["failed"] += 1
        with _ray(address, quiet) as ray:
            for row in _execute(ray, job, settings, actors):
                counts[row["status"]] += 1
                if row["status"] == "failed":
                    print(f"error: {row['error']}", file=sys.stderr)
                first = first or (row["target"] if row["status"] == "written" else "")
                log.add(row["source"], row["target"], row["status"], backend=row["backend"] or "",
                        seconds=round(float(row["seconds"]), 4), error=row["error"], attempts=int(row["attempts"] or 0))  # fmt: skip
    except BaseException:
        log.discard()
        _remove_leftovers([target for _, target in job.pairs])
        raise
    log.close()
    if not quiet or counts["failed"] or job.skipped:
        done = f"{counts['written']} written, {counts['failed']} failed"
        done += f", {counts['skipped']} skipped (complete)" if counts["skipped"] else ""
        done += f", {len(job.skipped)} skipped" if job.skipped else ""
        print(f"{done}: {first}" if job.single and first else done, file=sys.stderr)
    return 1 if counts["failed"] else 0


@contextlib.contextmanager
def _one_run_at_a_time(folder: Path | None) -> Iterator[None]:
    """Hold the output folder for this run: a second cluster run into it is refused, since its commits and
    report would count as its own what this one wrote. An flock on the folder itself: nothing is created
    in it, and the lock goes with the process however it ends. Object storage has no such lock."""
    if folder is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError(
                f"{folder}: another --cluster run is writing into this folder; wait for it, or choose another OUTPUT"
            ) from None
        yield
    finally:
        os.close(fd)


def _remove_leftovers(targets: list[str]) -> None:
    """Temporaries of this run's commits that a stopped Ray worker left (core/files.py names them
    `.NAME.XXXX.part.EXT` beside their target); the folder is this run's alone (_one_run_at_a_time)."""
    for target in targets:
        if is_remote(target):
            continue
        path = Path(target)
        for leftover in path.parent.glob(f".{glob.escape(path.stem)}.*{TEMP_MARK}{glob.escape(path.suffix)}"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _execute(ray, job: RunPlan, settings: Settings, actors: int | None) -> Iterator[dict]:
    """The pipeline on Ray Data: decode (task) -> x4 (actor pool) -> commit (task); one outcome per pair."""
    if not job.pairs:
        return
    actors, gpus = _actors(ray, actors)
    attempts = ray.remote(num_cpus=0)(Attempts).options(name=f"lsanet-attempts-{uuid.uuid4().hex[:12]}").remote()
    rows = [{"source": s, "target": t} for s, t in job.pairs]
    dataset = (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
        .map(decode, fn_kwargs={"overwrite": settings.overwrite, "max_pixels": settings.max_pixels,
                                  "scale": settings.outscale})
        .map_batches(Infer, fn_constructor_kwargs={"settings": settings, "attempts": attempts}, batch_size=1,
                     compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus, num_cpus=0 if gpus else 1)
        .map(commit)
    )  # fmt: skip
    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayError as exc:
        raise ClusterError(f"the Ray job failed: {one_line(first_line(exc))}") from None
    finally:
        ray.kill(attempts)
