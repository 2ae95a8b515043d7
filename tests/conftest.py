"""Shared fixtures: the read-only ../shared folder (weights, Set5) and free photos from scikit-image.

Where ../shared is absent, its tests skip with the reason on a user's machine but fail under CI (CI is set),
so a broken path can never turn the real-weights tests into silent skips.

Tests by kind: plain function calls wherever the library is what is tested (`upscale_here` runs upscale.py's
library call in this process); a subprocess (`run_script`) only where the process is the point: exit codes,
signals, the one-line error contract end to end. `slow` marks tests that take over ~5 s by themselves or
need the session's real export (`exported`); `python -m pytest -m "not slow"` is the quick loop, and CI
runs everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png")


def shared_path(relative: str) -> Path:
    """A path under ../shared, or a skip (a failure under CI) when it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"{path} not found: the real-weights tests need the read-only ../shared folder beside the repo"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def weights_path() -> Path:
    return shared_path("weights/team44_LSANet.pth")


@pytest.fixture(scope="session")
def public_model(weights_path: Path):
    from export.checkpoint import load_checkpoint

    return load_checkpoint(weights_path)


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.ascontiguousarray(image[..., ::-1])


@pytest.fixture(scope="session")
def set5() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) uint8 RGB triples of Set5 x4 as shipped in ../shared/data/Set5."""
    folder = shared_path("data/Set5")
    pairs = []
    for lr in sorted(folder.glob("*_LR.png")):
        pairs.append((lr.name, read_rgb(lr), read_rgb(lr.with_name(lr.name.replace("_LR", "_HR")))))
    assert len(pairs) == 5
    return pairs


def matlab_downscale(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    """MATLAB-exact bicubic x1/scale of an RGB uint8 image (the degradation LSANet was trained on)."""
    import torch
    from bicubic_pytorch import core

    h, w = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    x = torch.from_numpy(hr[:h, :w].astype(np.float32)).permute(2, 0, 1)[None]
    lr = core.imresize(x, scale=1 / scale)
    return lr[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


@pytest.fixture(scope="session")
def photos() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR) uint8 RGB triples from scikit-image's free photos, HR cropped to a multiple of 4."""
    from skimage import data

    triples = []
    for name in SKIMAGE_PHOTOS:
        hr = getattr(data, name.removesuffix(".png"))()
        lr = matlab_downscale(hr)
        triples.append((name, lr, hr[: lr.shape[0] * 4, : lr.shape[1] * 4]))
    return triples


def to_uint8(x: np.ndarray) -> np.ndarray:
    """The SR benchmark convention: clamp to [0, 1], times 255, round."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_hwc(batch: np.ndarray) -> np.ndarray:
    return batch[0].transpose(1, 2, 0)


# Fixtures that take far over 5 s to make: every test that uses one is marked `slow`.
SLOW_FIXTURES = {"exported"}  # one real export.py run: ONNX, the parity gate, a TensorRT-RTX engine (20-40 s)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def run_script(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run export.py or upscale.py as a user would, from the repo root unless told otherwise."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="session")
def exported(tmp_path_factory, weights_path: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """One real `export.py --fp16` run for the whole session: (its output folder, the finished process)."""
    out = tmp_path_factory.mktemp("engines")
    result = run_script("export.py", "--ckpt", str(weights_path), "--fp16", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def upscale_cli(exported, *args: str) -> subprocess.CompletedProcess:
    """upscale.py with the session's exported engines folder."""
    return run_script("upscale.py", *args, "--engines-dir", str(exported[0]))


def upscale_here(capfd, inputs: str | Path, output: str | Path | None = None, **settings) -> subprocess.CompletedProcess:
    """What `upscale.py INPUTS [OUTPUT]` does, in this process: the library's run (runtime/app.py
    upscale_files, with these Settings fields) inside the commands' wrapper (core/command.py run_command),
    with what it printed to stderr (capfd: also what native code writes to file descriptor 2). Only argument
    parsing and the interpreter's start are left out, and the subprocess tests cover those."""
    from core.command import run_command
    from runtime.app import upscale_files
    from runtime.settings import Settings

    capfd.readouterr()
    target = None if output is None else str(output)  # as the command passes it: a trailing '/' or s3:// intact
    code = run_command(lambda: upscale_files(str(inputs), target, Settings(**settings)), False, "no partial file was left")
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["upscale_files", str(inputs), str(output)], code, out, err)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 1, no traceback, and `error:` lines that mention every needle."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(n in "\n".join(errors) for n in needles), result.stderr
