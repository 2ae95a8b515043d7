"""`--cluster ray` (runtime/cluster.py) on a local Ray started once for the module: the files it writes are
the bytes a local `Upscaler` writes, a damaged file is listed as failed while the others are written, and an
existing output is kept without overwrite."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import Upscaler
from runtime.cluster import Settings, run_cluster
from runtime.job import Options

if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):
        raise RuntimeError("ray is not installed: the [test] extra includes ray[data], so CI must have it")
    pytest.skip("ray is not installed (pip install -e '.[cluster]')", allow_module_level=True)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Four small real photos: colour PNG, JPEG, 16-bit grey PNG and RGBA PNG, about 32x40."""
    from skimage import data

    here = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(here / "astronaut.png"), data.astronaut()[100:132, 200:240, ::-1])
    cv2.imwrite(str(here / "coffee.jpg"), data.coffee()[100:132, 200:240, ::-1])
    cv2.imwrite(str(here / "camera16.png"), data.camera()[200:232, 200:240].astype(np.uint16) * 257)
    chelsea = data.chelsea()[100:132, 200:240, ::-1]
    alpha = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (32, 1))
    cv2.imwrite(str(here / "chelsea.png"), np.dstack([chelsea, alpha]))
    return here


def _run(exported, source: Path, out: Path, capsys, **options) -> tuple[int, str]:
    settings = Settings(engines_dir=str(exported[0]))
    status = run_cluster(str(source), str(out), settings=settings, options=Options(**options), quiet=True)
    return status, capsys.readouterr().err


def test_outputs_equal_the_local_upscaler(ray_local, exported, folder, tmp_path, capsys) -> None:
    status, err = _run(exported, folder, tmp_path / "ray", capsys)
    assert status == 0, err
    with Upscaler(engines_dir=exported[0]) as up:
        for source in sorted(folder.iterdir()):
            name = f"{source.stem}_x4{source.suffix}"
            up.upscale_file(source, tmp_path / name)
            ours, theirs = tmp_path / "ray" / name, tmp_path / name
            assert np.array_equal(cv2.imread(str(ours), cv2.IMREAD_UNCHANGED), cv2.imread(str(theirs), cv2.IMREAD_UNCHANGED))
            assert ours.read_bytes() == theirs.read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(f"{p.stem}_x4{p.suffix}" for p in folder.iterdir())


def test_a_damaged_file_fails_alone_and_outputs_are_kept(ray_local, exported, folder, tmp_path, capsys) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for source in folder.iterdir():
        (inputs / source.name).write_bytes(source.read_bytes())
    whole = (inputs / "coffee.jpg").read_bytes()
    (inputs / "coffee.jpg").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    out.mkdir()
    (out / "astronaut_x4.png").write_bytes(b"not ours")

    status, err = _run(exported, inputs, out, capsys)
    assert status == 1
    assert "2 written, 2 failed" in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert all(line.startswith("error:") or line == "2 written, 2 failed" for line in err.splitlines()), err  # no Ray noise
    assert len(errors) == 2 and any("coffee.jpg" in e and ("damaged" in e or "truncated" in e) for e in errors), err
    assert any("astronaut_x4.png: exists" in e for e in errors), err
    assert (out / "astronaut_x4.png").read_bytes() == b"not ours"
    assert not (out / "coffee_x4.jpg").exists()
    assert {p.name for p in out.iterdir()} == {"astronaut_x4.png", "camera16_x4.png", "chelsea_x4.png"}

    status, err = _run(exported, inputs, out, capsys, overwrite=True)
    assert status == 1 and "2 written, 2 failed" in err, err
    assert (out / "astronaut_x4.png").read_bytes() == b"not ours"  # not an earlier result: kept even so
