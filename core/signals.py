"""Signals as exceptions: SIGINT, SIGTERM and SIGHUP raise `Interrupted` where the program is, so every
`finally` (temporary files, staging folders, engine builds) runs exactly as for Ctrl-C; and a block can
hold a signal back until it ends (`interrupts_deferred`), so a temporary is never left half made."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

# The signals that stop a command cleanly (exit 128 + number), in every place that handles them.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised where the program is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_deferring = 0
_pending: int | None = None


def _raise_interrupted(signum: int, _frame: object) -> None:
    global _pending
    if _deferring:
        _pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a signal that arrives during the block until it ends (e.g. while a temporary file is created or
    removed, so that it is never left behind). Python runs signal handlers in the main thread whatever
    thread the OS delivered the signal to, so this works in threaded programs, where a signal mask cannot."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """STOP_SIGNALS raise Interrupted for the duration (the command's own process only)."""
    previous = {s: signal.signal(s, _raise_interrupted) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
