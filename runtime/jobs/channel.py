"""Stages on threads joined by bounded, stoppable channels: what the pipelined folder run and the video
loop are built of.

Decoding, inference and encoding overlap (the codecs and the inference backends release the GIL while
they work), and at most a channel's size of items wait between two stages, so memory does not grow with a
folder's or a video's length. The caller's thread runs inference, so Ctrl-C and SIGTERM (which Python
delivers there) stop everything: the run's stop event is set and every started stage is waited for before
the exception goes on. One wait policy for every stage: an Event set when its body has returned, never
Thread.join(): on Python 3.11 a signal that interrupts join() marks the still-running thread as ended
(bpo-45274), and the command would then remove a temporary a stage is still writing. An exception in a
stage stops the other stages and is raised in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

QUEUE_ITEMS = 4
DONE = object()
_POLL_S = 0.1


class Stopped(Exception):
    """Raised inside a stage when another stage failed or the run was interrupted."""


class Channel:
    """A bounded queue whose waits end when the run stops."""

    def __init__(self, stop: threading.Event, size: int = QUEUE_ITEMS) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = stop

    def put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                pass
        raise Stopped

    def get(self) -> Any:
        """The next item; Stopped when the run stops while waiting."""
        while True:
            try:
                return self.queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    raise Stopped from None

    def __iter__(self) -> Iterator[Any]:
        """Items until DONE."""
        while (item := self.get()) is not DONE:
            yield item


class Stage(threading.Thread):
    """A daemon thread running `body`; its exception (other than Stopped) is kept and stops the run.
    `wait()` returns once the body has returned (at once for a stage never started)."""

    def __init__(self, name: str, body: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._body, self._halt = body, stop
        self.error: BaseException | None = None
        self._launched, self._finished = False, threading.Event()

    def start(self) -> None:
        self._launched = True
        super().start()

    def run(self) -> None:
        try:
            self._body()
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            self.error = exc
            self._halt.set()
        finally:
            self._finished.set()

    def wait(self) -> None:
        if self._launched:
            self._finished.wait()


class Timer:
    """Busy seconds per stage (what the benchmark splits into decode, inference and encode)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, since: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - since


def run_stages(
    read: Callable[[Channel], None],
    middle: Callable[[Any], Any],
    write: Callable[[Channel], None],
) -> None:
    """Run `read` (puts items, then DONE) and `write` (iterates its channel) in threads and `middle` on each
    item here, in order. Returns when `write` has finished; raises the first failure of any stage."""
    stop = threading.Event()
    inbox, outbox = Channel(stop), Channel(stop)

    def reader() -> None:
        read(inbox)
        inbox.put(DONE)

    stages = [
        Stage("video-reader", reader, stop),
        Stage("video-writer", lambda: write(outbox), stop),
    ]
    try:
        for stage in stages:
            stage.start()
        try:
            for item in inbox:
                outbox.put(middle(item))
            outbox.put(DONE)
            stages[1].wait()
        except Stopped:
            pass
    finally:
        stop.set()
        for stage in stages:
            stage.wait()
    for stage in stages:
        if stage.error is not None:
            raise stage.error
