"""The per-file step (runtime/jobs/step.py) every run is made of: the output checks, the earlier-result test
of a local target, and the run going on past bad files. Real files throughout; the network is replaced by a
nearest-neighbour x4 (the step never looks at pixels, only at what it reads and writes)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.errors import ImageError, OutputError
from runtime.images.io import Image, is_result_of, read_image, write_image
from runtime.jobs.step import Complete, LocalFile, check_output, prepare, run_one, run_sequential


def nearest_x4(image: Image, _source: Path | None = None) -> Image:
    return Image(image.colour.repeat(4, axis=0).repeat(4, axis=1))


def photo(path: Path, shape: tuple[int, int] = (12, 10), seed: int = 0) -> Path:
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8))
    return path


def earlier_result(source: Path, target: Path) -> Path:
    """What this tool wrote for `source` on an earlier run (marked as its result, 4x the size)."""
    write_image(target, nearest_x4(read_image(source)))
    return target


@pytest.fixture
def source(tmp_path) -> Path:
    return photo(tmp_path / "a.png")


def check(source: Path, target: Path, overwrite: bool = False, inputs: set[Path] | None = None):
    return check_output(source, target, overwrite, {source.resolve()} if inputs is None else inputs)


# Never an input


@pytest.mark.parametrize("overwrite", [False, True])
def test_the_input_itself_is_never_the_output(source, overwrite) -> None:
    with pytest.raises(OutputError, match="would overwrite its input"):
        check(source, source, overwrite)
    with pytest.raises(OutputError, match="would overwrite its input"):  # the same file by another spelling
        check(source, source.parent / "." / source.name, overwrite)


@pytest.mark.parametrize("link", [os.symlink, os.link], ids=["symlink", "hard-link"])
def test_a_link_to_the_input_is_the_input(tmp_path, source, link) -> None:
    link(source, tmp_path / "out.png")
    before = source.read_bytes()
    with pytest.raises(OutputError, match="would overwrite its input"):
        check(source, tmp_path / "out.png", overwrite=True)
    assert source.read_bytes() == before


def test_another_input_of_the_run_is_never_an_output(tmp_path, source) -> None:
    other = photo(tmp_path / "b.png", seed=1)
    with pytest.raises(OutputError, match="is also one of the inputs; choose another --suffix or folder"):
        check(source, other, overwrite=True, inputs={source.resolve(), other.resolve()})


# Where it goes


def test_the_output_folder_must_exist_and_be_writable(tmp_path, source, monkeypatch) -> None:
    with pytest.raises(OutputError, match=f"output folder {tmp_path / 'missing'} does not exist"):
        check(source, tmp_path / "missing" / "out.png")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # permission bits do not bind root: answer as the kernel does for anyone else
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and Path(path) != locked)
    with pytest.raises(OutputError, match=f"output folder {locked} is not writable"):
        check(source, locked / "out.png")


def test_nothing_there_is_written_without_replacing_anything(tmp_path, source) -> None:
    assert not check(source, tmp_path / "out.png")  # nothing to replace: the commit will be exclusive
    assert not check(source, tmp_path / "out.png", overwrite=True)


# What is there already


def test_an_earlier_result_is_kept_and_skipped_unless_overwrite(tmp_path, source) -> None:
    target = earlier_result(source, tmp_path / "a_x4.png")
    with pytest.raises(OutputError, match=r"a_x4.png: exists, an earlier result of a.png; kept"):
        check(source, target)
    with pytest.raises(Complete):  # the step skips it before reading anything: a re-run resumes
        prepare(source, target, False, {source.resolve()}, 10**6)
    assert check(source, target, overwrite=True)  # may be replaced
    assert prepare(source, target, True, {source.resolve()}, 10**6).replace


@pytest.mark.parametrize(
    "make",
    [
        lambda path: photo(path, (48, 40), seed=2),  # a photo exactly 4x the input, not made by this tool
        lambda path: path.write_bytes(b"keep me"),
        lambda path: write_image(path, Image(np.zeros((36, 30, 3), np.uint8))),  # this tool's, but 3x: another input's
    ],
    ids=["photo-4x-size", "not-an-image", "result-of-another-size"],
)
def test_overwrite_replaces_only_an_earlier_result_of_this_input(tmp_path, source, make) -> None:
    target = tmp_path / "out.png"
    make(target)
    before = target.read_bytes()
    with pytest.raises(OutputError, match="exists and is not an earlier x4 result of a.png .*, even with --overwrite"):
        check(source, target, overwrite=True)
    with pytest.raises(OutputError, match="exists and is not an earlier x4 result of a.png"):  # nor skipped as done
        prepare(source, target, False, {source.resolve()}, 10**6)
    assert target.read_bytes() == before


@pytest.mark.parametrize("kind", ["folder", "link-to-a-result", "dangling-link"])
def test_what_is_not_a_regular_file_is_never_replaced(tmp_path, source, kind) -> None:
    target = tmp_path / "out.png"
    if kind == "folder":
        target.mkdir()
    elif kind == "link-to-a-result":  # replacing it would write through to wherever it points
        target.symlink_to(earlier_result(source, tmp_path / "elsewhere.png"))
    else:
        target.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(OutputError, match="exists and is not a regular file; refusing to replace it"):
        check(source, target)
    with pytest.raises(OutputError, match="exists and is not a regular file; refusing to replace it, even with --overwrite"):
        check(source, target, overwrite=True)


def test_other_kinds_of_output_bring_their_own_earlier_result_test(tmp_path, source) -> None:
    """Videos judge an existing target with their own test (runtime/video): the step asks it, not the image one."""
    target = tmp_path / "clip_x4.mkv"
    target.write_bytes(b"a video this tool wrote")
    assert check_output(source, target, True, {source.resolve()}, is_result=lambda s, t: (s, t) == (source, target))
    with pytest.raises(OutputError, match="not an earlier x4 result"):
        check_output(source, target, True, {source.resolve()}, is_result=lambda s, t: False)


def test_a_local_target_is_complete_only_with_an_earlier_result_of_its_input(tmp_path, source) -> None:
    assert not LocalFile(tmp_path / "a_x4.png").complete(source)  # missing
    assert LocalFile(earlier_result(source, tmp_path / "a_x4.png")).complete(source)
    assert not LocalFile(photo(tmp_path / "foreign.png", (48, 40))).complete(source)
    (tmp_path / "dir.png").mkdir()
    assert not LocalFile(tmp_path / "dir.png").complete(source)
    other = photo(tmp_path / "b.png", (20, 20))  # a result of a.png is no result of b.png
    assert not LocalFile(tmp_path / "a_x4.png").complete(other)


# The step and the run


def test_the_output_is_checked_before_the_input_is_decoded(tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(OutputError, match="would overwrite its input"):  # not an ImageError: nothing was decoded
        prepare(broken, broken, False, {broken.resolve()}, 10**6)


def test_one_step_writes_a_result_this_tool_recognises(tmp_path, source) -> None:
    target = run_one(source, tmp_path / "a_x4.png", nearest_x4, False, {source.resolve()}, 10**6)
    assert is_result_of(source, target) and cv2.imread(str(target)).shape == (48, 40, 3)
    first = target.stat()

    def never(image: Image, _source: Path) -> Image:
        raise AssertionError("a complete result was upscaled again")

    with pytest.raises(Complete):
        run_one(source, target, never, False, {source.resolve()}, 10**6)
    assert target.stat().st_ino == first.st_ino and target.stat().st_mtime_ns == first.st_mtime_ns
    assert run_one(source, target, nearest_x4, True, {source.resolve()}, 10**6) == target
    assert target.stat().st_ino != first.st_ino  # a new file took its place, atomically


def test_a_run_goes_on_past_bad_files_and_reports_each_once(tmp_path) -> None:
    sources = [photo(tmp_path / "a.png"), tmp_path / "b.png", photo(tmp_path / "c.png", seed=3), photo(tmp_path / "d.png"),
               photo(tmp_path / "e.png", seed=4)]  # fmt: skip
    sources[1].write_bytes(b"plain text")
    inputs_before = {p: p.read_bytes() for p in sources}
    out = tmp_path / "out"
    out.mkdir()
    (out / "d_x4.png").write_bytes(b"not ours")
    earlier_result(sources[4], out / "e_x4.png")  # done by an earlier, interrupted run

    def upscale(image: Image, source: Path) -> Image:
        if source.name == "c.png":
            raise MemoryError("no room for c")  # a failure of one file, like an ImageError
        return nearest_x4(image)

    reports: list[tuple[str, str]] = []
    outcome = run_sequential([(s, out / f"{s.stem}_x4.png") for s in sources], upscale, False, 10**6,
                             lambda path, message: reports.append((path.name, message)))  # fmt: skip
    assert outcome.written == [out / "a_x4.png"] and outcome.skipped == [out / "e_x4.png"]
    assert [(p.name, m) for p, m in outcome.failed] == reports
    assert [name for name, _ in reports] == ["b.png", "c.png", "d.png"]
    assert "b.png" in reports[0][1] and reports[1][1] == "no room for c" and "not an earlier x4 result of d.png" in reports[2][1]
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "d_x4.png", "e_x4.png"] and (out / "d_x4.png").read_bytes() == b"not ours"
    assert {p: p.read_bytes() for p in sources} == inputs_before


def test_a_bug_stops_the_run_instead_of_failing_one_file(tmp_path, source) -> None:
    def buggy(image: Image, _source: Path) -> Image:
        raise KeyError("a bug, not a bad file")

    with pytest.raises(KeyError):
        run_sequential([(source, tmp_path / "a_x4.png")], buggy, False, 10**6)
    assert not (tmp_path / "a_x4.png").exists()


def test_an_image_over_the_pixel_limit_fails_alone(tmp_path, source) -> None:
    big = photo(tmp_path / "big.png", (40, 40))
    outcome = run_sequential([(big, tmp_path / "big_x4.png"), (source, tmp_path / "a_x4.png")], nearest_x4, False, 1000)
    assert outcome.written == [tmp_path / "a_x4.png"] and [p for p, _ in outcome.failed] == [big]
    with pytest.raises(ImageError):
        read_image(big, 1000)
