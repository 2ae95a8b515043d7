"""The decision "this is an earlier result of ours" holds at the moment of the commit (core/files.py
Checked, runtime/jobs/step.py check_output): a file moved onto the output path while a run works is never
replaced, whatever driver runs the step; and a format without a mark is never taken for an earlier result."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.errors import OutputError
from core.files import Checked, atomic_path
from runtime.images.io import Image, read_image, write_image
from runtime.jobs.pipelined import run_pipelined
from runtime.jobs.step import check_output, commit, prepare, run_sequential

LIMIT = 10**8


def _photo(path: Path, side: int, level: int = 90) -> bytes:
    cv2.imwrite(str(path), np.full((side, side, 3), level, np.uint8))
    return path.read_bytes()


def _nearest(image: Image, _source: Path) -> Image:
    return Image(image.colour.repeat(4, axis=0).repeat(4, axis=1))


def test_a_file_swapped_in_after_the_check_is_not_replaced(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    _photo(source, 8)
    target = tmp_path / "a_x4.png"
    write_image(target, _nearest(read_image(source), source))  # an earlier result of ours
    prepared = prepare(source, target, True, {source.resolve()}, LIMIT)
    assert isinstance(prepared.replace, Checked)
    # While the run works, the user renames a photo onto the output path.
    photo = _photo(tmp_path / "holiday.png", 32, 200)
    os.replace(tmp_path / "holiday.png", target)
    with pytest.raises(OutputError, match="changed while this run was working"):
        commit(target, _nearest(prepared.image, source), prepared.replace)
    assert target.read_bytes() == photo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x4.png"]  # nothing left aside


def test_the_checked_earlier_result_is_replaced(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    _photo(source, 8)
    target = tmp_path / "a_x4.png"
    write_image(target, _nearest(read_image(source), source))
    before = Checked.of(target)
    prepared = prepare(source, target, True, {source.resolve()}, LIMIT)
    commit(target, _nearest(prepared.image, source), prepared.replace)
    assert Checked.of(target) != before and read_image(target).colour.shape == (32, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x4.png"]


def test_a_checked_file_that_went_away_is_not_needed(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"earlier")
    checked = Checked.of(target)
    target.unlink()
    with atomic_path(target, replace=checked) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("driver", ["sequential", "pipelined"])
def test_both_folder_drivers_keep_a_photo_moved_onto_an_output_mid_run(tmp_path: Path, driver: str) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    sources = []
    for name in ("a", "b"):
        sources.append(inputs / f"{name}.png")
        _photo(sources[-1], 8)
        write_image(out / f"{name}_x4.png", _nearest(read_image(sources[-1]), sources[-1]))
    photo = _photo(tmp_path / "photo.png", 32, 17)

    def upscale(image: Image, source: Path) -> Image:
        if source.name == "a.png":  # the user moves a photo onto a's output while a is being upscaled
            os.replace(tmp_path / "photo.png", out / "a_x4.png")
        return _nearest(image, source)

    pairs = [(s, out / f"{s.stem}_x4.png") for s in sources]
    run = run_sequential if driver == "sequential" else run_pipelined
    outcome = run(pairs, upscale, True, LIMIT)
    assert [p.name for p in outcome.written] == ["b_x4.png"]
    assert [(p.name, "changed while this run was working" in why) for p, why in outcome.failed] == [("a.png", True)]
    assert (out / "a_x4.png").read_bytes() == photo


def test_a_bmp_is_never_taken_for_an_earlier_result(tmp_path: Path) -> None:
    """BMP holds no metadata, so a photo exactly 4x the input's size cannot be told from a result."""
    source = tmp_path / "a.bmp"
    _photo(source, 8)
    target = tmp_path / "b.bmp"
    photo = _photo(target, 32, 40)
    with pytest.raises(OutputError, match="holds no mark of this tool"):
        check_output(source, target, True, {source.resolve()})
    assert target.read_bytes() == photo
