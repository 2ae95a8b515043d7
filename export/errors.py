"""The one error type the command-line tools turn into a one-line message and a non-zero exit, and the
wrapper both commands run in (one-line errors, clean exits on Ctrl-C, SIGTERM and SIGHUP)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator


class DeployError(Exception):
    """A failure the user can act on; its message is one line that says what and why."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is so that every `finally` (temporary files, staging
    folders) runs exactly as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _termination_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Interrupted for the duration (the command's own process only)."""
    caught = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, _raise_interrupted) for s in caught}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_command(body: Callable[[], int], debug: bool, after_interrupt: str) -> int:
    """Run a command's body: a DeployError (a failure the user can act on) becomes `error: ...` on stderr and
    exit 1; anything else is a bug in this program, said as such in one line (with the traceback under
    `debug`), exit 1; Ctrl-C, SIGTERM and SIGHUP a one-line note and exit 128 + the signal number."""
    try:
        with _termination_as_interrupt():
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
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported as one
        if debug:
            raise
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"error: internal error ({cause}); this is a bug, please report it with the output of --debug", file=sys.stderr)
        return 1
