"""The one error type the command-line tools turn into a one-line message and a non-zero exit, and the
wrapper both commands run in (one-line errors, clean exits on Ctrl-C, SIGTERM and SIGHUP)."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
from collections.abc import Callable, Iterator


class DeployError(Exception):
    """A failure the user can act on; its message is one line that says what and why."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised where the program is so that every `finally` (temporary files,
    staging folders) runs exactly as for Ctrl-C."""

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
def _signals_as_interrupts() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise Interrupted for the duration (the command's own process only)."""
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    caught = [getattr(signal, n) for n in names if hasattr(signal, n)]
    previous = {s: signal.signal(s, _raise_interrupted) for s in caught}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries add context and tracebacks below it), or the
    exception type's name when the message is empty."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def one_line(text: str) -> str:
    """`text` safe to print as one line: control characters (a newline or a terminal escape in a file
    name) shown escaped, so no name can split a message or forge another one."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: repr(m.group())[1:-1], text)


def run_command(body: Callable[[], int], debug: bool, after_interrupt: str) -> int:
    """Run a command's body: a DeployError (a failure the user can act on) becomes `error: ...` on stderr and
    exit 1; anything else is a bug in this program, said as such in one line (with the traceback under
    `debug`), exit 1; Ctrl-C, SIGTERM and SIGHUP a one-line note and exit 128 + the signal number."""
    try:
        with _signals_as_interrupts():
            return body()
    except KeyboardInterrupt as exc:
        from export.fileutil import remove_temporaries

        remove_temporaries()
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        name = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        print(f"{name} ({after_interrupt})", file=sys.stderr)
        return 128 + int(signum)
    except DeployError as exc:
        if debug:
            raise
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported as one
        if debug:
            raise
        cause = one_line(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        print(f"error: internal error ({cause}); this is a bug, please report it with the output of --debug", file=sys.stderr)
        return 1
