"""The library API: `Upscaler` gives what upscale.py writes, for arrays and files, from several threads."""

from __future__ import annotations

import re
import threading

import cv2
import numpy as np
import pytest

from core.errors import DeployError, OutputError
from runtime import Upscaler
from tests.conftest import ROOT, upscale_cli


@pytest.fixture(scope="module")
def upscaler(exported):
    with Upscaler(engines_dir=exported[0]) as up:
        yield up


def test_arrays_match_what_the_cli_writes(tmp_path, exported, photos, upscaler) -> None:
    _, lr, _ = photos[1]
    cv2.imwrite(str(tmp_path / "in.png"), lr[..., ::-1])
    assert upscale_cli(exported, str(tmp_path / "in.png"), str(tmp_path / "out.png")).returncode == 0
    written = cv2.imread(str(tmp_path / "out.png"))[..., ::-1]
    assert np.array_equal(upscaler(lr), written)
    assert upscaler.backend.startswith("openvino") and "CPU" in upscaler.choice.reason


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 2), (20, 30, 3), (20, 30, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_every_channel_layout_and_depth(upscaler, shape, dtype) -> None:
    pixels = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    out = upscaler(pixels)
    assert out.shape == (80, 120, *shape[2:]) and out.dtype == dtype


def test_bad_arrays_are_refused(upscaler) -> None:
    with pytest.raises(ValueError, match="uint8 or uint16"):
        upscaler(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        upscaler(np.zeros((20, 20, 5), np.uint8))


def test_threads_are_serialised_and_agree(upscaler, photos) -> None:
    images = [lr for _, lr, _ in photos]
    expected = [upscaler(lr) for lr in images]
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, upscaler(images[i]))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(results[i], expected[i]) for i in range(3))


def test_upscale_file_keeps_the_cli_guarantees(tmp_path, upscaler) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((20, 20, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.full((20, 20, 3), 30, np.uint8))
    assert upscaler.upscale_file(tmp_path / "a.png", tmp_path / "a_x4.png").is_file()
    first = (tmp_path / "a_x4.png").stat()
    assert upscaler.upscale_file(tmp_path / "a.png", tmp_path / "a_x4.png") == tmp_path / "a_x4.png"  # complete: kept
    assert (tmp_path / "a_x4.png").stat().st_mtime_ns == first.st_mtime_ns
    assert upscaler.upscale_file(tmp_path / "a.png", tmp_path / "a_x4.png", overwrite=True).is_file()
    assert (tmp_path / "a_x4.png").stat().st_ino != first.st_ino  # redone
    with pytest.raises(OutputError, match="not an earlier x4 result"):
        upscaler.upscale_file(tmp_path / "a.png", tmp_path / "b.png", overwrite=True)


def test_a_closed_upscaler_says_so(exported) -> None:
    up = Upscaler(backend="onnxruntime", engines_dir=exported[0])
    up.close()
    with pytest.raises(DeployError, match="closed"):
        up(np.zeros((20, 20, 3), np.uint8))


def test_the_readme_example_runs(tmp_path, exported, monkeypatch) -> None:
    """The Python block under 'Library' in README.md, run as written (inside a folder with its files)."""
    block = re.search(r"## Library.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no Python example under '## Library'"
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((20, 24, 3), 120, np.uint8))
    (tmp_path / "engines").symlink_to(exported[0])
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README's example
    assert (tmp_path / "photo_x4.png").is_file()
