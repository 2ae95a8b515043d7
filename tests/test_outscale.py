"""--outscale S (-s): the x4 result resized to S times the input (area filter shrinking, Lanczos enlarging),
marked for S, so that the resume rule and --overwrite know the scale."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from skimage import data

from runtime import Settings, Upscaler
from runtime.command import main
from runtime.images.io import Image, is_result_of, read_image
from runtime.images.outscale import resize_result


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "astronaut.png"
    cv2.imwrite(str(path), cv2.resize(data.astronaut(), (41, 37), interpolation=cv2.INTER_AREA)[..., ::-1])
    return path


@pytest.mark.parametrize(("scale", "size"), [(2.0, (82, 74)), (3.5, (144, 130)), (6.0, (246, 222))])
def test_the_result_is_s_times_the_input_and_marked_for_s(tmp_path: Path, photo: Path, exported, capsys, scale, size) -> None:
    status = main([str(photo), f"{tmp_path}/", "-s", f"{scale:g}", "--engines-dir", str(exported[0])])
    assert status == 0, capsys.readouterr().err
    target = tmp_path / f"astronaut_x{scale:g}.png"  # the default suffix follows the scale
    with PILImage.open(target) as image:
        assert image.size == size and image.getexif()[0x0131] == f"lsanet-deploy x{scale:g}"
    assert is_result_of(photo, target, scale) and not is_result_of(photo, target)
    # The same as resizing the x4 result yourself with the same filter: nothing else is done to it.
    with Upscaler(engines_dir=exported[0]) as up:
        x4 = up.upscale_image(read_image(photo))
    method = cv2.INTER_AREA if scale < 4 else cv2.INTER_LANCZOS4
    assert np.array_equal(read_image(target).colour, cv2.resize(x4.colour, size, interpolation=method))


def test_a_rerun_at_another_scale_is_not_taken_for_complete(tmp_path: Path, photo: Path, exported, capsys) -> None:
    target = tmp_path / "out.png"
    assert main([str(photo), str(target), "--engines-dir", str(exported[0])]) == 0  # x4
    capsys.readouterr()
    status = main([str(photo), str(target), "-s", "2", "--engines-dir", str(exported[0])])
    err = capsys.readouterr().err
    assert status == 1 and "exists and is not an earlier" in err, err  # an x4 result is not an x2 one
    assert main([str(photo), str(target), "-s", "2", "--overwrite", "--engines-dir", str(exported[0])]) == 1
    assert main([str(photo), str(target), "--overwrite", "--engines-dir", str(exported[0])]) == 0  # x4 redoes x4


def test_alpha_keeps_its_rule_after_the_resize() -> None:
    colour = np.full((40, 48, 3), 100, np.uint8)
    binary = np.zeros((40, 48), np.uint8)
    binary[10:30, 12:36] = 255
    for alpha, allowed in ((binary, {0, 255}), (np.full((40, 48), 77, np.uint8), {77})):
        resized = resize_result(Image(colour, alpha), 12, 10, 2.0)
        assert resized.colour.shape == (20, 24, 3) and set(np.unique(resized.alpha)) == allowed


def test_out_of_range_scales_are_refused(photo: Path, capsys) -> None:
    for bad in ("0", "-1", "17", "two"):
        with pytest.raises(SystemExit) as exit_:
            main([str(photo), "-s", bad])
        assert exit_.value.code == 2
    with pytest.raises(ValueError, match="must be above 0 and at most 16"):
        Upscaler(Settings(outscale=20))
