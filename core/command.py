"""The wrapper both commands run in: one-line errors, a bug said as a bug, clean exits on signals."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from core.errors import DeployError, first_line, one_line
from core.files import remove_temporaries
from core.signals import Interrupted, signals_as_interrupts


def run_command(body: Callable[[], int], debug: bool, after_interrupt: str) -> int:
    """Run a command's body: a DeployError (a failure the user can act on) and an OSError the system raised
    (errno set: disk full, permissions...) become `error: ...` on stderr and exit 1; anything else is a bug
    in this program, said as such in one line (with the traceback under `debug`), exit 1; Ctrl-C, SIGTERM
    and SIGHUP a one-line note and exit 128 + the signal number."""
    try:
        with signals_as_interrupts():
            return body()
    except KeyboardInterrupt as exc:
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
    except OSError as exc:
        if debug or not exc.errno:
            raise
        # The system refused (disk full, quota, read-only, permissions, too many open files...): the
        # environment's doing, not a bug. Temporaries were removed by the `finally` blocks on the way out.
        where = f" ({exc.filename})" if exc.filename else ""
        print(one_line(f"error: {os.strerror(exc.errno)}{where}; {after_interrupt}"), file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported as one
        if debug:
            raise
        cause = one_line(f"{type(exc).__name__}: {first_line(exc) if str(exc).strip() else ''}")
        print(f"error: internal error ({cause}); this is a bug, please report it with the output of --debug", file=sys.stderr)
        return 1
