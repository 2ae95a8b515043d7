"""`--cluster ray` stopped by SIGTERM ends like every other run (exit 143, one line, nothing partial left,
no stack dump from Ray's handlers), and a second cluster run into the same folder is refused meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
from skimage import data

from tests.conftest import ROOT


def test_sigterm_stops_a_cluster_run_cleanly_and_a_second_run_is_refused(tmp_path: Path, exported) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i in range(24):
        cv2.imwrite(str(inputs / f"a{i:02}.png"), data.astronaut()[8 * i : 8 * i + 360, 40:400, ::-1])
    command = [sys.executable, "upscale.py", str(inputs), str(out), "--cluster", "ray", "--engines-dir", str(exported[0])]
    env = dict(os.environ, RAY_ADDRESS="")  # a local Ray of the run's own
    first = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        while not (out.is_dir() and any(p.suffix == ".png" and not p.name.startswith(".") for p in out.iterdir())):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() - started < 120, "no result written in 2 minutes"
            time.sleep(0.2)
        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip().endswith("another --cluster run is writing into this folder; wait for it, or choose another OUTPUT")
        first.send_signal(signal.SIGTERM)
        stderr = first.communicate(timeout=120)[1]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == "stopped by SIGTERM (no partial file was left)", stderr
    assert "SIGTERM received" not in stderr  # Ray's C++ failure handler did not take the signal
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary, no report half-written
