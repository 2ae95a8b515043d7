"""Resource exhaustion is the environment's doing, not a bug: a file-size limit (the same EFBIG/ENOSPC path
as a full disk) while export.py writes its graphs or upscale.py writes a video ends in one line naming the
cause, exit 1, and nothing half-written (core/command.py)."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

LIMIT = 200 * 1024  # bytes any one file may grow to: below the FP32 graph (0.6 MB) and an FFV1 x4 clip


def _limited() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so that a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=_limited)


def _one_line(result: subprocess.CompletedProcess, cause: str) -> None:
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and cause in errors[0] and "bug" not in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_export_that_runs_out_of_room_says_so_and_leaves_nothing(tmp_path: Path, weights_path: Path) -> None:
    out = tmp_path / "engines"
    result = _run("export.py", "--ckpt", str(weights_path), "--out", str(out), "--flavor", "none")
    _one_line(result, "File too large")
    assert not list(out.iterdir())  # no staging folder, no file


@pytest.mark.slow
def test_a_video_that_runs_out_of_room_says_so_and_leaves_nothing(tmp_path: Path, exported) -> None:
    av = pytest.importorskip("av", reason="PyAV is the [video] extra")
    clip = tmp_path / "noise.mkv"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    out = tmp_path / "out"
    out.mkdir()
    result = _run("upscale.py", str(clip), str(out / "noise_x4.mkv"), "--codec", "ffv1", "--engines-dir", str(exported[0]))
    _one_line(result, "File too large")
    assert not list(out.iterdir())
