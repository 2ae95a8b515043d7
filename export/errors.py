"""The one error type the command-line tools turn into a one-line message and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable


class DeployError(Exception):
    """A failure the user can act on; its message is one line that says what and why."""


def run_command(body: Callable[[], int], debug: bool, after_interrupt: str) -> int:
    """Run a command's body: DeployError or ValueError becomes `error: ...` on stderr and exit 1 (with the
    traceback when `debug`), Ctrl-C a one-line note and exit 130."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"interrupted ({after_interrupt})", file=sys.stderr)
        return 130
    except (DeployError, ValueError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
