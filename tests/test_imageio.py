"""Image I/O: dtype, channels, alpha and EXIF orientation survive; bad files give clear errors."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.imageio import Image, ImageError, apply_orientation, exif_orientation, read_image, write_image


def jpeg_with_orientation(pixels_bgr: np.ndarray, orientation: int) -> bytes:
    """A real JPEG with an EXIF APP1 segment holding only the orientation tag."""
    ok, encoded = cv2.imencode(".jpg", pixels_bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
    data = encoded.tobytes()
    return data[:2] + app1 + data[2:]


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    bgr = np.zeros((20, 40, 3), np.uint8)
    bgr[:, :20] = (0, 0, 255)  # left half red
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_with_orientation(bgr, 6))
    image = read_image(path)
    assert image.colour.shape == (40, 20, 3)
    # Orientation 6: shown rotated 90 degrees clockwise, so the red half is now on top, in RGB order.
    assert image.colour[5, 10, 0] > 200 and image.colour[35, 10, 0] < 50
    assert np.array_equal(image.colour, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_opencv(tmp_path: Path, orientation: int) -> None:
    bgr = np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(jpeg_with_orientation(bgr, orientation))
    assert np.array_equal(read_image(path).colour, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


def test_orientation_parser_ignores_junk() -> None:
    assert exif_orientation(b"") == 1 and exif_orientation(b"MM\x00*\x00\x00\xff\xff") == 1
    assert np.array_equal(apply_orientation(np.arange(6).reshape(2, 3), 1), np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_sixteen_bit_rgba_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    image = Image(rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16), rng.integers(0, 65536, (12, 10), dtype=np.uint16))
    path = tmp_path / f"deep{suffix}"
    write_image(path, image)
    back = read_image(path)
    assert back.colour.dtype == np.uint16 and np.array_equal(back.colour, image.colour)
    assert np.array_equal(back.alpha, image.alpha)


def test_rgb_order_on_disk_is_bgr(tmp_path: Path) -> None:
    image = Image(np.zeros((4, 4, 3), np.uint8))
    image.colour[..., 0] = 255  # red
    path = tmp_path / "red.png"
    write_image(path, image)
    assert tuple(cv2.imread(str(path))[0, 0]) == (0, 0, 255)


def test_greyscale_stays_greyscale(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.arange(64, dtype=np.uint8).reshape(8, 8))
    image = read_image(path)
    assert image.is_grey and image.alpha is None
    write_image(tmp_path / "grey2.png", image)
    assert cv2.imread(str(tmp_path / "grey2.png"), cv2.IMREAD_UNCHANGED).ndim == 2


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"", "empty.png", "empty file"),
        (b"this is text, not an image\n", "text.png", "cannot decode"),
        (None, "cut.png", "cannot decode"),
        (b"BM", "bad.xyz", "unsupported file type"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes | None, name: str, message: str) -> None:
    path = tmp_path / name
    if content is None:
        ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        content = png.tobytes()[: len(png) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_formats_that_cannot_hold_the_image_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="8-bit samples only"):
        write_image(tmp_path / "x.jpg", Image(np.zeros((4, 4, 3), np.uint16)))
    with pytest.raises(ImageError, match="cannot store the alpha"):
        write_image(tmp_path / "x.jpg", Image(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)))
    assert list(tmp_path.iterdir()) == []
