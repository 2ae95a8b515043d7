"""A folder run with decoding, inference and encoding overlapped: the phases of runtime/jobs/step.py, with
the same result files byte for byte, the same checks and the same summary as run_sequential, in less time.

    reader thread --(queue of `depth` decoded images)--> inference (the calling thread)
                  --(at most `encoders` results in flight)--> encoder threads

Inference stays on the calling thread, so Ctrl-C, SIGTERM and SIGHUP (KeyboardInterrupt subclasses, raised
in the main thread) interrupt it as before; the reader is then stopped, queued encodes are dropped and the
one already writing finishes or fails atomically, all before the exception leaves this module, so no
thread is left writing when the command removes its temporaries.

Memory: at most `depth` + 2 decoded inputs (queued, one being decoded, one in inference) and `encoders` + 1
results (in flight, and the one waiting for a free encoder) exist at once; a result holds 16x its input's
pixels, so with the defaults (depth 2, two encoders) the bound is 4 x the largest input + 3 x the largest
result, about three times what the sequential run holds (1 input + 1 result).

Decoding is serialised (`CODEC`, runtime/images/io.py's capture lock): imageio captures file descriptor 2,
process-wide, around every decode and every OpenCV encode (JPEG, WebP, BMP) to read the codecs' damage
reports, and two captures at once would swap each other's descriptors and misattribute messages. PNG and
TIFF writing report errors as exceptions and need no capture, so they run beside decoding and inference,
and a PNG write filters and deflates on every core by itself (runtime/images/png.py). A small result is one or
two bands, though, so two encoder threads are the default: with the real network they gave 1.17x against
one encoder's 1.07x (BENCHMARKS.md). Whatever the run prints while a capture may be active (progress bars,
error reports) goes through `stderr_stream()`, which takes the lock: text printed into a capture would be
lost, or fail a good image if it read like damage.
"""

from __future__ import annotations

import io
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from core.descriptor import SCALE
from core.files import Replace
from runtime.images.io import CAPTURE_LOCK, Image
from runtime.jobs.channel import Channel, Stage
from runtime.jobs.step import FAILURES, Complete, Outcome, Upscale, commit, prepare

# imageio's capture lock, also held around every read_image made by this module and every write of
# stderr_stream() (see the module docstring).
CODEC = CAPTURE_LOCK
# What the reader hands over without a decoded image and without it being a bug.
SETTLED = (*FAILURES, Complete)


class _SerialisedStream(io.TextIOBase):
    """A text stream whose writes hold CODEC, so that they never land inside a codec's capture of fd 2."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with CODEC:
            written = self._stream.write(text)
            self._stream.flush()
        return written

    def flush(self) -> None:
        with CODEC:
            self._stream.flush()


def stderr_stream() -> TextIO:
    """sys.stderr for what a pipelined run prints while its threads decode and encode."""
    return _SerialisedStream(sys.stderr)


@dataclass
class _Decoded:
    index: int
    image: Image | None  # None when reading failed or the reader crashed
    replace: Replace = None
    error: BaseException | None = None


class _Reader:
    """Checks each output and decodes each input, in order, into a bounded channel; stops when told. An
    unexpected exception (a bug) is handed to the consumer to raise, never lost with the thread."""

    def __init__(self, jobs: list[tuple[Path, Path]], overwrite: bool, max_pixels: int, depth: int, scale: float) -> None:
        self.jobs, self.overwrite, self.max_pixels, self.scale = jobs, overwrite, max_pixels, scale
        self.inputs = {s.resolve() for s, _ in jobs}
        self.stopped = threading.Event()
        self.channel = Channel(self.stopped, depth)
        self.stage = Stage("decoder", self._read_all, self.stopped)

    def _read_all(self) -> None:
        for index, (source, target) in enumerate(self.jobs):
            try:
                prepared = prepare(source, target, self.overwrite, self.inputs, self.max_pixels, self.scale)
                item = _Decoded(index, prepared.image, prepared.replace)
            except BaseException as exc:  # noqa: BLE001 - failures and bugs alike go to the consumer
                item = _Decoded(index, None, error=exc)
            prepared = None  # only the channel's item holds the image now
            self.channel.put(item)  # Stopped (the stage ends quietly) when the run stops
            if item.image is None and not isinstance(item.error, SETTLED):
                return
            item = None

    def decoded(self) -> Iterator[_Decoded]:
        for _ in self.jobs:
            item = self.channel.get()
            if item.image is None and not isinstance(item.error, SETTLED):
                raise item.error
            yield item

    def stop(self) -> None:
        """Stop reading and wait until the thread is out of imageio."""
        self.stopped.set()
        self.stage.wait()


class _Encoders:
    """`count` encoder threads writing results handed over by `submit`, at most `count` in flight (queued
    plus writing). Started before the run, so that no thread is spawned where a signal may land."""

    def __init__(self, count: int) -> None:
        self.jobs: queue.Queue[tuple[Future[None], Path, Image, Replace] | None] = queue.Queue()
        self.slots = threading.BoundedSemaphore(count)
        never = threading.Event()  # an encoder's own exceptions go to its futures, so nothing stops the others
        self.stages = [Stage(f"encoder_{i}", self._work, never) for i in range(count)]
        for stage in self.stages:
            stage.start()

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            future, target, image, replace = job
            job = None
            if future.set_running_or_notify_cancel():
                try:
                    commit(target, image, replace)
                    future.set_result(None)
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer, failure or bug
                    future.set_exception(exc)
            image = None
            self.slots.release()

    def submit(self, target: Path, image: Image, replace: Replace) -> Future[None]:
        """Hand a result over, waiting for a free slot; the future says how its write went."""
        future: Future[None] = Future()
        self.slots.acquire()
        self.jobs.put((future, target, image, replace))
        return future

    def close(self, drop_queued: bool) -> None:
        """Let the threads finish (or drop the writes not yet started) and wait until every one has ended;
        a write already running completes or fails atomically."""
        while drop_queued:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self.stages:
            self.jobs.put(None)
        for stage in self.stages:
            stage.wait()


def run_pipelined(
    pairs: list[tuple[Path, Path]],
    upscale: Upscale,
    overwrite: bool,
    max_pixels: int,
    on_error: Callable[[Path, str], None] = lambda _path, _message: None,
    depth: int = 2,
    encoders: int = 2,
    scale: float = SCALE,
) -> Outcome:
    """run_sequential's contract (same files, same checks, failures listed and reported in input order),
    overlapped. `upscale` runs on the calling thread only; `on_error` is called from it, in input order."""
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    reader = _Reader(pairs, overwrite, max_pixels, depth, scale)
    results: list[Future[None] | BaseException | None] = []  # per input: its write, why it failed, None once settled
    outcome = Outcome()

    def settle() -> None:
        """Record (and report) the inputs whose fate is known, in input order, up to the first still writing;
        each settled entry is dropped (a failed write's traceback would otherwise hold its result)."""
        for index in range(len(outcome.written) + len(outcome.failed) + len(outcome.skipped), len(results)):
            result = results[index]
            if isinstance(result, Future) and not result.done():
                return
            error = result.exception() if isinstance(result, Future) else result
            results[index] = None
            if (reason := outcome.record(sources[index], targets[index], error)) is not None:
                with CODEC:
                    on_error(sources[index], reason)

    writers = _Encoders(encoders)
    reader.stage.start()
    finished = False
    try:
        for item in reader.decoded():
            image, item.image = item.image, None  # the queue item lets go of the input
            if image is None:
                results.append(item.error)
            else:
                try:
                    results.append(writers.submit(targets[item.index], upscale(image, sources[item.index]), item.replace))
                except FAILURES as exc:
                    results.append(exc)
            image = None
            settle()
        finished = True
    finally:
        # Every wait here is a Stage's wait(), never Thread.join() (runtime/jobs/channel.py says why).
        reader.stop()
        writers.close(drop_queued=not finished)
    settle()
    return outcome
