"""Decisions before work, as a user meets them on the command line (in-process): what can be told from
headers and arguments is told before the model loads or any inference runs; sub-folders are listed, or
walked with --recursive; --fp16 on a CPU says what it runs; logs get plain lines, not bar escapes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from core.vocabulary import package_version
from runtime.command import main


def _run(capsys, *args: str) -> tuple[int, str]:
    status = main([*args])
    return status, capsys.readouterr().err


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A folder with an RGBA, a 16-bit and a plain photo."""
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([np.full((20, 24, 3), 90, np.uint8), np.full((20, 24), 128, np.uint8)]))
    cv2.imwrite(str(folder / "deep.png"), np.full((20, 24, 3), 900, np.uint16))
    cv2.imwrite(str(folder / "plain.png"), np.full((20, 24, 3), 90, np.uint8))
    return folder


def test_a_format_that_cannot_keep_an_input_is_refused_before_any_inference(mixed: Path, tmp_path: Path, exported, capsys) -> None:
    status, err = _run(capsys, str(mixed), str(tmp_path / "out"), "--ext", "jpg", "--engines-dir", str(exported[0]))
    lines = err.strip().splitlines()
    assert status == 1 and lines[-1] == "1 written, 2 failed", err
    model = next(i for i, line in enumerate(lines) if line.startswith("model:"))
    refused = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(refused) == 2 and max(refused) < model, err  # both said before the model was even loaded
    assert "deep_x4.jpg: .jpg stores 8-bit samples only" in err and "rgba_x4.jpg: .jpg cannot store the alpha channel" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["plain_x4.jpg"]


def test_a_folder_into_a_file_name_is_refused_and_nothing_is_made(mixed: Path, tmp_path: Path, capsys) -> None:
    status, err = _run(capsys, str(mixed), str(tmp_path / "single.png"))
    assert status == 1 and "OUTPUT names a file, but INPUT is a folder or glob (of 3 image(s))" in err, err
    assert not (tmp_path / "single.png").exists()


def test_an_output_ending_in_a_slash_is_a_folder_even_for_one_file(mixed: Path, tmp_path: Path, exported, capsys) -> None:
    status, err = _run(capsys, str(mixed / "plain.png"), f"{tmp_path / 'made'}/", "--engines-dir", str(exported[0]))
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "made").iterdir()) == ["plain_x4.png"]
    status, err = _run(capsys, str(mixed / "plain.png"), str(tmp_path / "noformat"))
    assert status == 1 and "for a folder, end OUTPUT with '/'" in err, err


def test_an_unquoted_glob_is_named_as_the_cause(mixed: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([str(mixed / "deep.png"), str(mixed / "plain.png"), str(mixed / "rgba.png")])
    assert exit_.value.code == 2
    assert "did the shell expand an unquoted glob? Quote it" in capsys.readouterr().err


def test_sub_folders_are_listed_or_walked_with_recursive(mixed: Path, tmp_path: Path, exported, capsys) -> None:
    (mixed / "sub" / "deeper").mkdir(parents=True)
    cv2.imwrite(str(mixed / "sub" / "deeper" / "leaf.png"), np.full((20, 24, 3), 30, np.uint8))
    out = tmp_path / "out"
    status, err = _run(capsys, str(mixed), str(out), "--ext", "png", "--engines-dir", str(exported[0]))
    assert status == 0 and f"skipped {mixed / 'sub'}: a folder: its images are not taken (use --recursive)" in err, err
    assert not (out / "sub").exists()
    # Recursive into a folder inside INPUT: the results are mirrored, and never walked as inputs on a re-run.
    inside = mixed / "results"
    for _ in range(2):
        status, err = _run(capsys, str(mixed), str(inside), "--recursive", "--ext", "png", "--engines-dir", str(exported[0]))
        assert status == 0, err
    assert err.strip().splitlines()[-1] == "0 written, 0 failed, 4 skipped (complete)", err
    found = sorted(str(p.relative_to(inside)) for p in inside.rglob("*.png"))
    assert found == ["deep_x4.png", "plain_x4.png", "rgba_x4.png", "sub/deeper/leaf_x4.png"]


def test_fp16_on_a_cpu_runs_the_default_and_says_so(mixed: Path, tmp_path: Path, exported, capsys) -> None:
    status, err = _run(capsys, str(mixed / "plain.png"), str(tmp_path / "a.png"), "--fp16", "--engines-dir", str(exported[0]))
    assert status == 0, err
    backend = next(line for line in err.splitlines() if line.startswith("backend:"))
    assert backend.startswith("backend: openvino (fp32)") and "--fp16 needs a GPU backend, so it runs fp32" in backend


def test_logs_get_plain_lines_and_the_basics_are_there(mixed: Path, tmp_path: Path, exported, capsys) -> None:
    status, err = _run(capsys, str(mixed), str(tmp_path / "out"), "--ext", "png", "--engines-dir", str(exported[0]))
    assert status == 0 and "\r" not in err and "\x1b" not in err, repr(err)  # stderr is not a terminal here
    assert sum(line.startswith("upscaled ") for line in err.splitlines()) == 3, err
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.split()[-1] == package_version()  # prog is whatever argv[0] is
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default 64,000,000)" in help_text and "0 = no tiling: the whole image in one pass" in help_text


def test_image_quality_options_are_their_own(mixed: Path, tmp_path: Path, exported, capsys) -> None:
    """--jpeg-quality and --webp-quality (lossy; lossless without it), named apart from the video's --crf."""
    engines = ("--engines-dir", str(exported[0]))
    source = str(mixed / "plain.png")
    for name, extra in (("default.jpg", ()), ("q30.jpg", ("--jpeg-quality", "30")), ("lossless.webp", ()),
                        ("q60.webp", ("--webp-quality", "60"))):  # fmt: skip
        assert main([source, str(tmp_path / name), *extra, *engines]) == 0, capsys.readouterr().err
    assert (tmp_path / "q30.jpg").stat().st_size < (tmp_path / "default.jpg").stat().st_size
    assert b"VP8L" in (tmp_path / "lossless.webp").read_bytes()[:64]  # the lossless bitstream
    assert b"VP8 " in (tmp_path / "q60.webp").read_bytes()[:64]  # the lossy one
    with pytest.raises(SystemExit):
        main([source, "--jpeg-quality", "101"])
