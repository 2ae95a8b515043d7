"""The errors a user of the commands or the library can act on, and how their messages are printed.

Every failure a user or the environment causes is a `DeployError` whose message is one line that says what
and why; the commands print it as `error: ...` and exit 1. The subclasses say which part refused, so a
library user can catch one kind (`from runtime import ImageError`) without parsing messages.
"""

from __future__ import annotations

import re


class DeployError(Exception):
    """A failure the user can act on; its message is one line that says what and why."""


class BackendError(DeployError):
    """A backend that cannot be loaded or cannot run here; the message says why and what to do."""


class ImageError(DeployError):
    """An image that cannot be read or written; the message names the file."""


class JobError(DeployError):
    """A problem with a run's inputs or outputs as a whole (not with one image)."""


class OutputError(DeployError):
    """An output that may not be written: it is an input, or it exists and may not be replaced."""


class FetchError(DeployError):
    """The checkpoint could not be downloaded, or what came was not the expected file."""


class VideoError(DeployError):
    """A video that cannot be read, written or upscaled as asked; the message says which and why."""


class ClusterError(DeployError):
    """A problem with a cluster run as a whole: Ray missing or unreachable, inputs or outputs unusable."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries add context and tracebacks below it), or the
    exception type's name when the message is empty."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def one_line(text: str) -> str:
    """`text` safe to print as one line: control characters (a newline or a terminal escape in a file
    name) shown escaped, so no name can split a message or forge another one."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: repr(m.group())[1:-1], text)
