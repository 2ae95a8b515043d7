"""Image I/O: dtype, channels, alpha, ICC and EXIF survive; damaged, animated and oversized files are refused
with one line, and the decoders' own messages never reach the terminal. Real files, real decoders."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image as PILImage
from PIL import ImageCms

from core.errors import OutputError
from runtime.images.io import (
    Image,
    ImageError,
    apply_orientation,
    image_size,
    read_image,
    skip_reason,
    write_image,
)
from tests.conftest import ROOT


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


def test_exif_that_cannot_be_written_back_keeps_its_orientation(tmp_path: Path) -> None:
    """A camera block with Make stored as a RATIONAL (found by the fuzzing of a hostile trial): Pillow reads it
    but cannot write it back. The photo is still upscaled, upright, with that EXIF dropped."""
    bgr = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHII", 0x010F, 5, 1, 8 + 2 + 2 * 12 + 4)  # Make: one RATIONAL, stored after the IFD
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0) + struct.pack("<II", 1, 2)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
    path = tmp_path / "rational_make.jpg"
    path.write_bytes(encoded.tobytes()[:2] + app1 + encoded.tobytes()[2:])
    image = read_image(path)
    assert image.exif is None
    assert np.array_equal(image.colour, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])  # turned upright
    assert image.colour.shape == (40, 24, 3)


def test_write_refuses_samples_and_sizes_no_reader_takes(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="float32 samples"):
        write_image(tmp_path / "f.png", Image(np.zeros((4, 4), np.float32)))
    # libpng (OpenCV, this tool's reader, most viewers) refuses PNGs over 1,000,000 pixels on a side.
    with pytest.raises(ImageError, match="PNG readers refuse; write .tiff"):
        write_image(tmp_path / "wide.png", Image(np.zeros((1, 1_000_001), np.uint8)))
    assert not list(tmp_path.iterdir())


def test_junk_exif_is_dropped_not_fatal(tmp_path: Path) -> None:
    bgr = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    data = jpeg_with_orientation(bgr, 6)
    start = data.index(b"Exif\x00\x00") + 6
    path = tmp_path / "junk.jpg"
    path.write_bytes(data[:start] + b"MM\x00*\x00\x00\xff\xff" + data[start + 8 :])  # IFD offset past the end
    image = read_image(path)
    assert image.colour.shape == (8, 12, 3) and image.exif is None
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



def photo_bgr() -> np.ndarray:
    """A real photo at the size of a typical input (1000x872)."""
    return cv2.resize(skimage.data.astronaut()[..., ::-1], (1000, 872), interpolation=cv2.INTER_AREA)


def encoded(suffix: str, bgr: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(suffix, bgr, list(params))
    assert ok
    return data.tobytes()


def tifffile_bytes(bgr: np.ndarray) -> bytes:
    """A TIFF with its directory before the strips (tifffile's layout): a cut keeps a readable header."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, bgr[..., ::-1], photometric="rgb", rowsperstrip=16)
    return buffer.getvalue()


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize(
    ("name", "make", "cut"),
    [
        ("progressive.jpg", lambda b: encoded(".jpg", b, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), 0.5),
        ("baseline.jpg", lambda b: encoded(".jpg", b), 0.9),
        ("cut.png", lambda b: encoded(".png", b), 0.6),
        ("lossy.webp", lambda b: encoded(".webp", b), 0.6),
        ("lossless.webp", lambda b: encoded(".webp", b, (cv2.IMWRITE_WEBP_QUALITY, 101)), 0.6),
        ("strips.tif", tifffile_bytes, 0.5),
        ("opencv.tiff", lambda b: encoded(".tiff", b), 0.9),
        ("cut.bmp", lambda b: encoded(".bmp", b), 0.7),
    ],
)
def test_truncated_files_are_errors_and_silent(tmp_path: Path, capfd, name: str, make, cut: float) -> None:
    data = make(photo_bgr())
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    if name == "progressive.jpg":  # read by path, libjpeg returned a half-grey image; from bytes, nothing
        assert "truncated" in message
    assert capfd.readouterr() == ("", "")


def test_corrupt_jpeg_data_is_an_error(tmp_path: Path, capfd) -> None:
    data = bytearray(encoded(".jpg", photo_bgr()))
    middle = len(data) // 2
    data[middle : middle + 64] = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path = tmp_path / "flipped.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="Corrupt JPEG data"):
        read_image(path)
    assert capfd.readouterr() == ("", "")


def test_harmless_library_warnings_are_dropped(tmp_path: Path, capfd) -> None:
    # libtiff warns about the extra sample in OpenCV's own RGBA TIFFs; the image is fine.
    rgba = np.random.default_rng(0).integers(0, 256, (12, 10, 4), dtype=np.uint8)
    path = tmp_path / "opencv_rgba.tiff"
    assert cv2.imwrite(str(path), rgba)
    image = read_image(path)
    assert np.array_equal(image.alpha, rgba[..., 3]) and np.array_equal(image.colour, rgba[..., 2::-1])
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("name", ["pages.tiff", "animated.webp", "animated.png"])
def test_multi_page_and_animated_files_are_refused(tmp_path: Path, name: str) -> None:
    frames = [PILImage.new("RGB", (16, 12), (60 * i, 0, 0)) for i in range(3)]
    path = tmp_path / name
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match=r"has 3 pages/frames; only single images are supported"):
        read_image(path)


def test_gif_and_other_types_say_why_they_are_skipped(tmp_path: Path) -> None:
    frames = [PILImage.new("RGB", (16, 12), (60 * i, 0, 0)) for i in range(3)]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="GIF is not supported"):
        read_image(path)
    assert "GIF" in skip_reason(path) and "unsupported file type" in skip_reason("notes.txt")
    assert skip_reason("photo.JPG") is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_alpha_png_round_trip(tmp_path: Path, dtype) -> None:
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max
    image = Image(rng.integers(0, top + 1, (9, 13), dtype=dtype), rng.integers(0, top + 1, (9, 13), dtype=dtype))
    path = tmp_path / "la.png"
    write_image(path, image)
    assert path.read_bytes()[25] == 4  # IHDR colour type: grey+alpha
    with PILImage.open(path) as im:
        im.verify()  # an independent decoder accepts the chunks and CRCs
    back = read_image(path)
    assert back.is_grey and back.dtype == dtype
    assert np.array_equal(back.colour, image.colour) and np.array_equal(back.alpha, image.alpha)


def test_grey_alpha_png_from_pillow_is_read_as_grey_alpha(tmp_path: Path) -> None:
    grey = np.arange(96, dtype=np.uint8).reshape(8, 12)
    alpha = np.full((8, 12), 200, np.uint8)
    path = tmp_path / "pillow_la.png"
    PILImage.fromarray(np.dstack([grey, alpha]), "LA").save(path)
    image = read_image(path)
    assert image.is_grey and np.array_equal(image.colour, grey) and np.array_equal(image.alpha, alpha)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tiff"])
def test_icc_profile_round_trip(tmp_path: Path, suffix: str) -> None:
    icc = srgb_profile()
    source = tmp_path / f"in{suffix}"
    PILImage.fromarray(skimage.data.coffee()[:64, :48]).save(source, icc_profile=icc)
    image = read_image(source)
    assert image.icc == icc
    target = tmp_path / f"out{suffix}"
    write_image(target, image)
    with PILImage.open(target) as im:
        assert im.info.get("icc_profile") == icc
    assert read_image(target).icc == icc


def test_sixteen_bit_tiff_keeps_its_profile(tmp_path: Path) -> None:
    icc = srgb_profile()
    image = Image(np.random.default_rng(0).integers(0, 65536, (12, 10, 3), dtype=np.uint16), icc=icc)
    write_image(tmp_path / "deep.tiff", image)
    back = read_image(tmp_path / "deep.tiff")
    assert back.icc == icc and np.array_equal(back.colour, image.colour)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_exif_kept_with_orientation_reset(tmp_path: Path, suffix: str) -> None:
    exif = PILImage.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    source = tmp_path / "phone.jpg"
    PILImage.fromarray(skimage.data.coffee()[:40, :60]).save(source, exif=exif, quality=95)
    image = read_image(source)
    assert image.colour.shape == (60, 40, 3)  # turned upright
    target = tmp_path / f"out{suffix}"
    write_image(target, image)
    with PILImage.open(target) as im:
        kept = im.getexif()
    assert kept[0x0112] == 1 and kept[0x010F] == "TestCam"
    assert read_image(target).colour.shape == (60, 40, 3)  # not turned a second time


def test_image_size_is_after_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_with_orientation(np.zeros((20, 40, 3), np.uint8), 6))
    assert image_size(path) == (20, 40) == read_image(path).colour.shape[1::-1]


def bomb_png(path: Path, side: int = 30000) -> None:
    """A complete, valid 1-bit greyscale PNG of side x side black pixels: about 110 kB on disk, 900 MB decoded
    (read without the limit it takes 4 s and 1.8 GB here)."""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)), (b"IDAT", idat), (b"IEND", b"")]
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    )


def test_decompression_bomb_refused_fast_and_small(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    bomb_png(path)
    probe = (
        "import json, re, time\n"
        "from runtime.images.io import ImageError, read_image\n"
        "start = time.perf_counter()\n"
        "try:\n"
        f"    read_image({str(path)!r})\n"
        "    message = None\n"
        "except ImageError as exc:\n"
        "    message = str(exc)\n"
        # VmHWM, not ru_maxrss: the latter survives exec, so it would report the forking test process's peak.
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, 'message': message, 'max_rss_mib': peak}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert report["message"] is not None and str(path) in report["message"]
    assert "30000x30000" in report["message"] and "--max-pixels" in report["message"]
    assert report["seconds"] < 1.0 and report["max_rss_mib"] < 300
    assert result.stderr == ""


def test_max_pixels_can_be_raised(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((30, 40), np.uint8))
    with pytest.raises(ImageError, match="1200 pixels, above the limit of 1000"):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=1200).colour.shape == (30, 40)


def test_exclusive_write_keeps_a_file_that_appeared(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"another process's result")
    with pytest.raises(OutputError, match="appeared while this run was working"):
        write_image(path, Image(np.zeros((4, 4), np.uint8)))
    assert path.read_bytes() == b"another process's result"
    write_image(path, Image(np.zeros((4, 4), np.uint8)), replace=True)
    assert read_image(path).colour.shape == (4, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
