"""The one error type the command-line tools turn into a one-line message and a non-zero exit."""


class DeployError(Exception):
    """A failure the user can act on; its message is one line that says what and why."""
