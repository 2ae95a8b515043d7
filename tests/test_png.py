"""runtime/images/png.py: the parallel PNG writer, checked by libpng (through OpenCV) and Pillow, not by itself."""

from __future__ import annotations

import io
import threading
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms
from skimage import data

from runtime.images import png
from runtime.images.io import SOFTWARE, _marked_exif


def _png(samples: np.ndarray, **kwargs) -> bytes:
    stream = io.BytesIO()
    png.write_png(stream, samples, **kwargs)
    return stream.getvalue()


def _libpng(encoded: bytes) -> np.ndarray:
    """Decoded by libpng through OpenCV, channels back in RGB(A) order."""
    pixels = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    return pixels if pixels.ndim == 2 else pixels[..., [2, 1, 0, 3][: pixels.shape[2]]]


def _photo_like(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise (filters and run lengths both matter), every sample value reachable."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, top, shape[1])[None, :] * np.linspace(0.2, 1, shape[0])[:, None]
    ramp = ramp.reshape(shape[:2] + (1,) * (len(shape) - 2))
    noise = rng.integers(0, top // 8 + 1, shape)
    return np.clip(np.broadcast_to(ramp, shape) + noise, 0, top).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [None, 3, 4])
def test_libpng_decodes_exactly_what_was_written(dtype, channels) -> None:
    shape = (37, 53) if channels is None else (37, 53, channels)
    samples = _photo_like(shape, dtype)
    decoded = _libpng(_png(samples))
    assert decoded.dtype == dtype and np.array_equal(decoded, samples)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_alpha_is_colour_type_4(dtype) -> None:
    samples = _photo_like((29, 31, 2), dtype)
    encoded = _png(samples)
    assert encoded[25] == 4 and encoded[24] == 8 * np.dtype(dtype).itemsize  # IHDR colour type, bit depth
    # libpng (OpenCV) expands grey+alpha to BGRA; the grey lands in every colour channel.
    decoded = _libpng(encoded)
    assert np.array_equal(decoded[..., 0], samples[..., 0]) and np.array_equal(decoded[..., 3], samples[..., 1])
    if dtype == np.uint8:
        assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(encoded))), samples)


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 4), (1, 9000, 3), (700, 1), (3, 2, 3)])
def test_degenerate_shapes(shape) -> None:
    """One pixel, one row wider than a band, one column taller than a band, fewer pixels than a pixel's bytes."""
    samples = _photo_like(shape, np.uint16)
    assert np.array_equal(_libpng(_png(samples)), samples)


def test_bands_join_into_one_valid_stream_whatever_the_thread_count() -> None:
    """Many bands (a 4.6 MB image against 1 MiB bands): the file is the same for 1, 2 and 7 threads, and
    Pillow's verify() checks every chunk's CRC and the zlib stream's Adler-32 decodes clean."""
    samples = _photo_like((1100, 1400, 3), np.uint8, seed=1)
    files = {threads: _png(samples, threads=threads) for threads in (1, 2, 7)}
    assert files[1] == files[2] == files[7]
    encoded = files[1]
    assert encoded.count(b"IDAT") >= 4
    PILImage.open(io.BytesIO(encoded)).verify()
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(encoded))), samples)
    # The IDAT payloads, joined, are one complete zlib stream (header, sync-flushed bands, final band, Adler-32).
    payload, offset = b"", 8
    while offset < len(encoded):
        length = int.from_bytes(encoded[offset : offset + 4], "big")
        if encoded[offset + 4 : offset + 8] == b"IDAT":
            payload += encoded[offset + 8 : offset + 8 + length]
        offset += 12 + length
    inflater = zlib.decompressobj()
    raw = inflater.decompress(payload)
    assert inflater.eof and not inflater.unused_data and len(raw) == 1100 * (1 + 1400 * 3)


def test_metadata_chunks_are_read_back_by_pillow() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = _marked_exif(None)
    encoded = _png(_photo_like((8, 8, 3), np.uint8), icc=icc, exif=exif)
    image = PILImage.open(io.BytesIO(encoded))
    assert image.info["icc_profile"] == icc
    assert image.getexif()[0x0131] == SOFTWARE


def test_real_photo_smaller_than_opencv_default() -> None:
    """The reason for the filter choice, on a real photo enlarged as the network's results are (smooth):
    never larger than what OpenCV wrote before this writer."""
    photo = cv2.resize(data.astronaut(), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    ours = _png(photo)
    assert np.array_equal(_libpng(ours), photo)
    assert len(ours) < len(cv2.imencode(".png", photo[..., ::-1])[1])


def test_python_zlib_at_any_level_gives_the_same_file(monkeypatch) -> None:
    """zlib-ng is a speed choice only: Python's zlib writes the same bytes, and with Z_RLE the level does not
    change them (so there is no level to choose; BENCHMARKS.md)."""
    samples = _photo_like((600, 700, 3), np.uint8, seed=2)
    ours = _png(samples)
    monkeypatch.setattr(png, "zlib", zlib)
    for level in (1, 9):
        monkeypatch.setattr(png, "_LEVEL", level)
        assert _png(samples) == ours


def test_adler32_combine_matches_zlib() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        first, second = (rng.integers(0, 256, rng.integers(0, 6000), dtype=np.uint8).tobytes() for _ in range(2))
        combined = png._adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(first + second)


@pytest.mark.parametrize(
    "samples",
    [np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int16), np.zeros((4, 4), bool), np.zeros((4, 4, 5), np.uint8),
     np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)],
)  # fmt: skip
def test_refuses_what_png_cannot_hold(samples) -> None:
    stream = io.BytesIO()
    with pytest.raises(ValueError):
        png.write_png(stream, samples)
    assert stream.getvalue() == b""


@pytest.mark.parametrize("arguments", [{"threads": 0}, {"threads": 1.5}, {"icc": "sRGB"}, {"exif": [1, 2]}])
def test_bad_arguments_are_refused_before_anything_is_written(arguments) -> None:
    stream = io.BytesIO()
    with pytest.raises(ValueError):
        png.write_png(stream, np.zeros((4, 4), np.uint8), **arguments)
    assert stream.getvalue() == b""


def test_big_endian_samples_are_the_same_image() -> None:
    samples = _photo_like((40, 30, 3), np.uint16)
    assert _png(samples.astype(">u2")) == _png(samples)


class _Trickle(io.RawIOBase):
    """An unbuffered stream that takes at most 1000 bytes per write, as a pipe or socket may."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        taken = bytes(data[:1000])
        self.data += taken
        return len(taken)


def test_short_writes_are_completed() -> None:
    samples = _photo_like((300, 200, 4), np.uint8)
    stream = _Trickle()
    png.write_png(stream, samples)
    assert bytes(stream.data) == _png(samples)


class _FailingStream(io.BytesIO):
    """A disk that fills up after the header."""

    def write(self, data) -> int:
        if self.tell() > 100:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_failing_stream_stops_the_pool() -> None:
    before = threading.active_count()
    with pytest.raises(OSError, match="No space left"):
        png.write_png(_FailingStream(), _photo_like((1500, 1000, 3), np.uint8), threads=4)
    assert threading.active_count() == before
