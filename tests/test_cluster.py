"""`--cluster ray` (runtime/cluster.py) on a local Ray started once for the module: a folder of real photos
(grey, 16-bit, RGBA, mixed sizes, one damaged) gives the bytes a local `Upscaler` writes and a complete
report; a re-run redoes only missing outputs; an existing foreign output is kept; a killed inference actor
loses nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import Upscaler
from runtime.cluster import REPORT_NAME, run_cluster
from runtime.settings import Settings

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
    """Nine small real photos of mixed sizes (24x32 to 40x48): colour PNG and JPEG, 8-bit grey, 16-bit grey
    and colour, RGBA, BMP."""
    from skimage import data

    here = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(here / "astronaut.png"), data.astronaut()[100:132, 200:240, ::-1])
    cv2.imwrite(str(here / "coffee.jpg"), data.coffee()[100:132, 200:240, ::-1])
    cv2.imwrite(str(here / "camera16.png"), data.camera()[200:232, 200:240].astype(np.uint16) * 257)
    cv2.imwrite(str(here / "moon.png"), data.moon()[200:224, 200:232])
    cv2.imwrite(str(here / "rocket.jpg"), data.rocket()[150:190, 200:248, ::-1])
    cv2.imwrite(str(here / "hubble16.png"), data.hubble_deep_field()[0:40, 0:40, ::-1].astype(np.uint16) * 257)
    cv2.imwrite(str(here / "coins.bmp"), data.coins()[50:90, 50:98])
    cv2.imwrite(str(here / "cat.jpg"), data.cat()[100:148, 100:140, ::-1])
    chelsea = data.chelsea()[100:132, 200:240, ::-1]
    alpha = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (32, 1))
    cv2.imwrite(str(here / "chelsea.png"), np.dstack([chelsea, alpha]))
    return here


@pytest.fixture(scope="module")
def expected(exported, folder, tmp_path_factory) -> Path:
    """The single-process results of `folder`, by `Upscaler.upscale_file`."""
    out = tmp_path_factory.mktemp("local")
    with Upscaler(engines_dir=exported[0]) as up:
        for source in folder.iterdir():
            up.upscale_file(source, out / f"{source.stem}_x4{source.suffix}")
    return out


def _copy(folder: Path, to: Path, times: int = 1) -> Path:
    to.mkdir()
    for source in folder.iterdir():
        for i in range(times):
            (to / f"{source.stem}{f'-{i}' if i else ''}{source.suffix}").write_bytes(source.read_bytes())
    return to


def _run(exported, source: Path, out: Path, capsys, **options) -> tuple[int, str]:
    settings = Settings(engines_dir=exported[0], quiet=True, **options)
    status = run_cluster(str(source), str(out), settings)
    return status, capsys.readouterr().err


def _report(out: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in (out / REPORT_NAME).read_text().splitlines()]
    return {Path(line["input"]).name: line for line in lines}


def _same(out: Path, expected: Path, name: str) -> None:
    assert (out / name).read_bytes() == (expected / name).read_bytes(), name


def test_a_folder_equals_the_local_run_and_a_rerun_redoes_only_what_is_missing(
    ray_local, exported, folder, expected, tmp_path, capsys
) -> None:
    inputs = _copy(folder, tmp_path / "in")
    (inputs / "broken.png").write_bytes((folder / "astronaut.png").read_bytes()[:200])
    out = tmp_path / "out"
    status, err = _run(exported, inputs, out, capsys)
    assert status == 1 and "9 written, 1 failed" in err, err
    names = sorted(f"{p.stem}_x4{p.suffix}" for p in folder.iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, REPORT_NAME])
    for name in names:
        _same(out, expected, name)
    report = _report(out)
    assert len(report) == 10 and report["broken.png"]["status"] == "failed" and "broken.png" in report["broken.png"]["error"]
    for line in (report[p.name] for p in folder.iterdir()):
        assert line["status"] == "written" and line["error"] == "" and line["attempts"] == 1, line
        assert line["backend"] and line["seconds"] > 0 and Path(line["output"]).parent == out, line

    deleted = names[::2]
    for name in deleted:
        (out / name).unlink()
    # A .bmp holds no mark of this tool, so a BMP result still there cannot be told from a photo: it is
    # neither skipped as complete nor replaced, but reported (runtime/images/io.py UNMARKED).
    unmarked = [n for n in names if n not in deleted and n.endswith(".bmp")]
    status, err = _run(exported, inputs, out, capsys)
    failed, skipped = 1 + len(unmarked), 9 - len(deleted) - len(unmarked)
    assert status == 1 and f"{len(deleted)} written, {failed} failed, {skipped} skipped (complete)" in err, err
    report = _report(out)
    for line in report.values():
        name = Path(line["output"]).name
        failing = name.startswith("broken") or name in unmarked
        expected_status = "failed" if failing else "written" if name in deleted else "skipped"
        assert line["status"] == expected_status, line
    for name in names:
        _same(out, expected, name)


def test_a_foreign_output_is_kept_even_with_overwrite(ray_local, exported, folder, tmp_path, capsys) -> None:
    inputs = _copy(folder, tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "astronaut_x4.png").write_bytes(b"not ours")
    status, err = _run(exported, inputs, out, capsys)
    assert status == 1 and "8 written, 1 failed" in err, err
    assert all(line.startswith("error:") or line == "8 written, 1 failed" for line in err.splitlines()), err  # no Ray noise
    assert "astronaut_x4.png: exists" in _report(out)["astronaut.png"]["error"]
    coins = (out / "coins_x4.bmp").read_bytes()
    status, err = _run(exported, inputs, out, capsys, overwrite=True)
    # The .bmp result of the first run holds no mark of this tool: refused too (runtime/images/io.py UNMARKED).
    assert status == 1 and "7 written, 2 failed" in err and "coins_x4.bmp: exists, and a .bmp file holds no mark" in err, err
    assert (out / "astronaut_x4.png").read_bytes() == b"not ours"  # not an earlier result: kept even so
    assert (out / "coins_x4.bmp").read_bytes() == coins


def test_a_killed_inference_actor_loses_nothing(ray_local, exported, tmp_path, capsys) -> None:
    """Larger crops, so that inference is most of the work and the kill lands in the middle of one."""
    from skimage import data

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(10):
        cv2.imwrite(str(inputs / f"astronaut{i}.png"), data.astronaut()[40 * i : 40 * i + 112, 100:228, ::-1])
    out = tmp_path / "out"
    result: list[int] = []
    job = threading.Thread(target=lambda: result.append(_run(exported, inputs, out, capsys)[0]))
    job.start()
    deadline = time.monotonic() + 60

    def ledger():  # runtime/cluster.py's Attempts actor of this run
        names = [a for a in ray_local.util.list_named_actors() if a.startswith("lsanet-attempts-")]
        return ray_local.get_actor(names[0]) if names else None

    while not (ledger() and ray_local.get(ledger().workers.remote())) and time.monotonic() < deadline:
        time.sleep(0.01)
    (pid,) = ray_local.get(ledger().workers.remote())
    while not ray_local.get(ledger().busy.remote()) and time.monotonic() < deadline:  # kill it mid-image
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    job.join(120)
    assert result == [0]
    report = _report(out)
    assert len(report) == 10 and all(line["status"] == "written" for line in report.values()), report
    assert any(line["attempts"] == 2 for line in report.values()), "the kill came between two images"
    with Upscaler(engines_dir=exported[0]) as up:
        for source in inputs.iterdir():
            up.upscale_file(source, tmp_path / source.name)
            assert (out / f"{source.stem}_x4.png").read_bytes() == (tmp_path / source.name).read_bytes()
