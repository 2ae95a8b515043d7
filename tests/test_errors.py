"""How failures are said (core/errors.py, core/command.py): one line per error whatever the message holds,
`error: ...` and exit 1 for what a user can act on, a bug said as a bug, and signals as clean exits with
every temporary removed. The wrapper is called in this process with bodies that fail in each way; the
subprocess tests (tests/test_reliability.py) check the same contract as a terminal sees it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from core.command import run_command
from core.errors import BackendError, DeployError, ImageError, first_line, one_line
from core.files import atomic_path, temporary_folder
from core.signals import Interrupted


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("cannot decode", "cannot decode"),
        ("first\nsecond\nthird", "first"),  # libraries add context and tracebacks below
        ("\n\n  first after blanks\nsecond", "first after blanks"),
        ("", "ValueError"),  # an empty message says at least what it was
        ("   \n ", "ValueError"),
    ],
)
def test_first_line(message: str, expected: str) -> None:
    assert first_line(ValueError(message)) == expected


def test_first_line_of_an_exception_without_a_message_names_its_type() -> None:
    assert first_line(MemoryError()) == "MemoryError" and first_line(KeyError()) == "KeyError"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a/b c.png", "a/b c.png"),
        ("evil\nerror: forged", "evil\\nerror: forged"),  # a newline cannot start a forged error line
        ("x\rerror: over", "x\\rerror: over"),  # nor a carriage return overwrite this one
        ("clear\x1b[2J", "clear\\x1b[2J"),  # terminal escapes are shown, not obeyed
        ("tab\there", "tab\\there"),
        ("nul\x00 del\x7f csi\x9b", "nul\\x00 del\\x7f csi\\x9b"),  # C0, DEL and C1 controls alike
        ("café 写真 ☃", "café 写真 ☃"),  # printable text of any script is left alone
    ],
)
def test_one_line_escapes_control_characters_only(text: str, expected: str) -> None:
    assert one_line(text) == expected
    assert "\n" not in one_line(text) and "\r" not in one_line(text)


def run(body, capsys, debug: bool = False) -> tuple[int, str]:
    code = run_command(body, debug, "nothing was left")
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def raising(exc: BaseException):
    def body() -> int:
        raise exc

    return body


def test_a_body_that_succeeds_gives_its_status_and_prints_nothing(capsys) -> None:
    assert run(lambda: 0, capsys) == (0, "")
    assert run(lambda: 3, capsys) == (3, "")  # e.g. 1 when some image of a folder failed


@pytest.mark.parametrize("error", [DeployError, BackendError, ImageError])
def test_a_failure_the_user_can_act_on_is_one_error_line_and_exit_1(capsys, error) -> None:
    code, err = run(raising(error("in.png: cannot decode\nlibpng says: CRC error")), capsys)
    assert code == 1 and err == "error: in.png: cannot decode\\nlibpng says: CRC error\n"


def test_anything_else_is_said_to_be_a_bug_in_one_line(capsys) -> None:
    code, err = run(raising(RuntimeError("tile\x1b[2J\nTraceback (most recent call last):")), capsys)
    assert code == 1
    assert err == "error: internal error (RuntimeError: tile\\x1b[2J); this is a bug, please report it with the output of --debug\n"
    code, err = run(raising(ZeroDivisionError()), capsys)
    assert code == 1 and err.startswith("error: internal error (ZeroDivisionError: ); this is a bug") and err.count("\n") == 1


@pytest.mark.parametrize("exc", [DeployError("user"), RuntimeError("bug")])
def test_debug_shows_the_traceback_instead(capsys, exc) -> None:
    with pytest.raises(type(exc)):
        run_command(raising(exc), True, "nothing was left")
    assert capsys.readouterr().err == ""


def test_a_usage_error_exit_passes_through(capsys) -> None:
    """argparse's exit 2 (SystemExit) is not a bug and not an error line: it leaves as it came."""
    with pytest.raises(SystemExit) as exit_:
        run_command(raising(SystemExit(2)), False, "nothing was left")
    assert exit_.value.code == 2 and capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (KeyboardInterrupt(), 130, "interrupted (nothing was left)"),
        (Interrupted(signal.SIGINT), 130, "interrupted (nothing was left)"),
        (Interrupted(signal.SIGTERM), 143, "stopped by SIGTERM (nothing was left)"),
        (Interrupted(signal.SIGHUP), 129, "stopped by SIGHUP (nothing was left)"),
    ],
    ids=["ctrl-c", "SIGINT", "SIGTERM", "SIGHUP"],
)
def test_an_interrupt_exits_128_plus_the_signal_with_one_note(capsys, exc, code, line) -> None:
    assert run(raising(exc), capsys) == (code, line + "\n")


def test_an_interrupt_removes_every_temporary_still_alive(tmp_path: Path, capsys) -> None:
    """A signal can land where no `finally` will run for a temporary (here: opened and never closed, as in a
    frame the interrupt unwound past); the wrapper removes what is left."""
    opened = []

    def body() -> int:
        file = atomic_path(tmp_path / "out.png")
        folder = temporary_folder(tmp_path, ".staging-")
        opened.extend([file, folder])
        file.__enter__().write_bytes(b"half a PNG")
        folder.__enter__()
        assert len(list(tmp_path.iterdir())) == 2
        raise Interrupted(signal.SIGTERM)

    assert run(body, capsys)[0] == 143
    assert list(tmp_path.iterdir()) == []


def test_real_signals_become_clean_exits_and_the_handlers_are_restored(capsys) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    for signum in (signal.SIGTERM, signal.SIGHUP):

        def body(signum: int = signum) -> int:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises at once, here at the latest
            raise AssertionError("the signal did not interrupt the body")

        code, err = run(body, capsys)
        assert code == 128 + signum and err == f"stopped by {signal.Signals(signum).name} (nothing was left)\n"
    assert {s: signal.getsignal(s) for s in before} == before
