"""Re-runs resume, as users of other upscalers expect: a complete earlier result of this tool for an input is
skipped and reported as such (one rule for folders, single files, the library and video), `--overwrite`
redoes it, and anything else at an output path is never replaced. Through the command line in-process."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from runtime import Upscaler
from runtime.command import main


def _photos(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for name, image in (("astronaut", data.astronaut()), ("coffee", data.coffee()), ("chelsea", data.chelsea())):
        paths.append(folder / f"{name}.png")
        cv2.imwrite(str(paths[-1]), cv2.resize(image, (40, 32), interpolation=cv2.INTER_AREA)[..., ::-1])
    return paths


def _run(capsys, *args: str) -> tuple[int, str]:
    status = main([*args])
    return status, capsys.readouterr().err


def test_a_rerun_skips_what_is_complete_and_does_what_is_missing(tmp_path: Path, exported, capsys) -> None:
    _photos(tmp_path / "in")
    out, engines = tmp_path / "out", str(exported[0])
    assert _run(capsys, str(tmp_path / "in"), str(out), "--engines-dir", engines)[0] == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    status, err = _run(capsys, str(tmp_path / "in"), str(out), "--engines-dir", engines)
    assert status == 0 and err.strip().splitlines()[-1] == "0 written, 0 failed, 3 skipped (complete)", err
    assert "model:" not in err  # nothing left to do: no model is loaded
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    (out / "coffee_x4.png").unlink()
    status, err = _run(capsys, str(tmp_path / "in"), str(out), "--engines-dir", engines)
    assert status == 0 and err.strip().splitlines()[-1] == "1 written, 0 failed, 2 skipped (complete)", err
    assert (out / "coffee_x4.png").read_bytes() == before["coffee_x4.png"][0]  # the same result again
    status, err = _run(capsys, str(tmp_path / "in"), str(out), "--engines-dir", engines, "--overwrite")
    assert status == 0 and err.strip().splitlines()[-1] == "3 written, 0 failed", err
    assert all(p.stat().st_mtime_ns != before[p.name][1] for p in out.iterdir())  # every one redone


def test_a_file_that_is_not_a_result_is_never_replaced_nor_taken_as_complete(tmp_path: Path, exported, capsys) -> None:
    source = _photos(tmp_path / "in")[0]
    out = tmp_path / "out"
    out.mkdir()
    photo = (out / "astronaut_x4.png")
    cv2.imwrite(str(photo), np.full((128, 160, 3), 50, np.uint8))  # 4x the size, but not made by this tool
    kept = photo.read_bytes()
    for extra in ((), ("--overwrite",)):
        status, err = _run(capsys, str(source), str(photo), "--engines-dir", str(exported[0]), *extra)
        assert status == 1 and "exists and is not an earlier x4 result of astronaut.png" in err, err
        assert "if the shell expanded an unquoted glob into INPUT and OUTPUT, quote it" in err
        assert "model:" not in err  # decided before the model loads
        assert photo.read_bytes() == kept


def test_the_library_resumes_by_the_same_rule(tmp_path: Path, exported) -> None:
    source = _photos(tmp_path / "in")[1]
    target = tmp_path / "coffee_x4.png"
    with Upscaler(engines_dir=exported[0]) as up:
        up.upscale_file(source, target)
        written = target.stat().st_mtime_ns
        assert up.upscale_file(source, target) == target and target.stat().st_mtime_ns == written
        up.upscale_file(source, target, overwrite=True)
        assert target.stat().st_mtime_ns != written


@pytest.mark.slow
def test_a_video_rerun_is_skipped_before_any_model_loads(tmp_path: Path, exported, capsys) -> None:
    av = pytest.importorskip("av", reason="PyAV is the [video] extra")
    clip = tmp_path / "clip.mkv"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("ffv1", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 40 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert _run(capsys, str(clip), "--engines-dir", str(exported[0]))[0] == 0
    status, err = _run(capsys, str(clip), "--engines-dir", str(exported[0]))
    assert status == 0 and err.strip() == f"0 written, 0 failed, 1 skipped (complete): {tmp_path / 'clip_x4.mkv'}", err
