"""Read and write images, keeping what the file says and refusing what would come out wrong.

Kept: bit depth (by dtype, never by pixel values), greyscale, grey+alpha, alpha, the ICC colour profile,
EXIF (with orientation applied to the pixels and reset to 1). RGB order inside the program, BGR only at
OpenCV's edge.

Reading is two steps. The header, with Pillow (lazy: size, mode, frames, ICC and EXIF without decoding
pixels), refuses animations and multi-page files, and images above a pixel limit, before any memory is
spent. Then OpenCV decodes the pixels with IMREAD_UNCHANGED (the only mode that keeps alpha and 16 bits).
The C decoders report damage only as text on stderr (libjpeg returns a half-grey image after "Premature
end of JPEG file"), so file descriptor 2 is captured while decoding: a message that says the data is
corrupt or truncated makes the read fail with that message; other library chatter is dropped. Nothing the
libraries print reaches the terminal. OpenCV's log level is left alone: its log goes to the same descriptor,
and the level is process-wide state.

Writing is atomic and, unless `replace`, exclusive: never a partial file, never another process's result
replaced. Pixels and metadata are written by runtime/images/png.py for PNG (every colour type at 8 and 16 bits,
deflated on every core; ICC and EXIF), by OpenCV for JPEG and WebP (ICC and EXIF) and BMP (none), and by
tifffile for TIFF (ICC; OpenCV's TIFF writer takes no metadata). Only OpenCV's encoders report through
stderr, so only they run inside the capture of file descriptor 2; PNG and TIFF writing raise exceptions
and run beside other threads' decoding.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image as PILImage

from core.descriptor import SCALE
from core.errors import ImageError, first_line
from core.files import Replace, atomic_path
from runtime.images.png import LIBPNG_MAX_SIDE, write_png

READABLE = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
# Image types a user may expect to work, with the reason they do not (for folder runs to report).
UNSUPPORTED = {
    ".gif": "GIF is not supported (a 256-colour palette, often animated): convert it to PNG",
    ".apng": "animated PNG is not supported: only single images are",
    ".heic": "HEIC is not supported: convert it to PNG or JPEG",
    ".heif": "HEIF is not supported: convert it to PNG or JPEG",
    ".avif": "AVIF is not supported: convert it to PNG or JPEG",
}
EIGHT_BIT_ONLY = {".jpg", ".jpeg", ".webp", ".bmp"}
NO_ALPHA = {".jpg", ".jpeg", ".bmp"}
# The result has 16x the pixels of the input: a 64-megapixel input (every camera up to 61 MP) gives a
# 1-gigapixel, 3 GiB (8-bit RGB) output, about what a workstation holds. Larger needs --max-pixels.
DEFAULT_MAX_PIXELS = 64_000_000
# Written into every result's EXIF (PNG, JPEG, WebP) or TIFF Software tag: what `is_result_of` looks for
# before --overwrite may replace a file. Formats in UNMARKED hold no metadata, so no file of theirs is
# ever taken for an earlier result (a photo exactly 4x the input's size would otherwise pass).
SOFTWARE = "lsanet-deploy x4"
UNMARKED = {".bmp"}
_SOFTWARE_TAG = 0x0131
_EXTRA_SAMPLES_TAG = 338
_BITS_PER_SAMPLE_TAG = 258
_ORIENTATION = 0x0112
_TIFF = {".tif", ".tiff"}
# Lines the decoders print that mean the pixels are incomplete or wrong (libjpeg warnings, libpng and
# libtiff errors, OpenCV's own error log); "extraneous bytes before marker 0xd9" is junk after the last
# scan, common in camera files, with every pixel decoded.
# Held while fd 2 is redirected (see _stderr_captured); re-entrant, as a flush inside may print.
CAPTURE_LOCK = threading.RLock()
_DAMAGE = re.compile(r"premature end|corrupt|bad huffman|invalid sos|progression|resync|error", re.IGNORECASE)
_HARMLESS = re.compile(r"extraneous bytes before marker 0xd9", re.IGNORECASE)



@dataclass
class Image:
    """Pixels in RGB order: `colour` is H x W x 3 or H x W (greyscale); `alpha` is H x W or None.

    `icc` is the embedded colour profile; `exif` a TIFF-structured EXIF block (no "Exif" prefix) that
    describes these pixels, so its orientation is 1 (upright). Both None when the file had none.
    """

    colour: np.ndarray
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    exif: bytes | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.colour.dtype

    @property
    def is_grey(self) -> bool:
        return self.colour.ndim == 2


@dataclass
class _Header:
    width: int  # as stored, before orientation
    height: int
    frames: int
    orientation: int  # the EXIF orientation this module applies (1 for TIFF: OpenCV applies its own)
    grey_alpha: bool
    icc: bytes | None
    exif: bytes | None  # TIFF-structured, orientation reset to 1
    pillow_pixels: bool = False  # 8-bit RGBA TIFF with unassociated alpha: OpenCV would premultiply it
    software: str | None = None  # EXIF/TIFF Software tag: SOFTWARE marks this tool's results

    @property
    def shown_size(self) -> tuple[int, int]:
        """(width, height) after orientation: the size `read_image` returns."""
        return (self.height, self.width) if self.orientation >= 5 else (self.width, self.height)


def skip_reason(path: str | Path) -> str | None:
    """Why a file of this type is not read (one line), or None when it is one of READABLE's types."""
    suffix = Path(path).suffix.lower()
    if suffix in READABLE:
        return None
    supported = ", ".join(sorted(READABLE))
    return UNSUPPORTED.get(suffix, f"unsupported file type '{Path(path).suffix}' (supported: {supported})")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as `read_image` returns the pixels (after EXIF orientation), from the header only."""
    return _read_header(Path(path)).shown_size


def is_result_of(source: str | Path, target: str | Path) -> bool:
    """Whether `target` is this tool's x4 result for `source`: exactly 4x its size (from the headers) and
    marked with SOFTWARE (so never a file of a format in UNMARKED). Only such a file may --overwrite
    replace: a photo that an unquoted glob made the OUTPUT is not, even when it happens to be 4x the size."""
    try:
        width, height = image_size(source)
        header = _read_header(Path(target))
    except ImageError:
        return False
    return header.software == SOFTWARE and header.shown_size == (width * SCALE, height * SCALE)


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode an image file; ImageError with the cause for anything that is not one complete image."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    reason = skip_reason(path)
    if reason is not None:
        raise ImageError(f"{path}: {reason}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    header = _read_header(path)
    if header.frames > 1:
        raise ImageError(f"{path}: has {header.frames} pages/frames; only single images are supported")
    if header.width * header.height > max_pixels:
        raise ImageError(
            f"{path}: {header.width}x{header.height} is {header.width * header.height} pixels, above the limit of "
            f"{max_pixels} (the result has 16 times as many); raise it with --max-pixels if this is intended"
        )
    pixels = _decode(path, header)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: {pixels.dtype} samples are not supported (8- or 16-bit integer images only)")
    if pixels.shape[:2] != (header.height, header.width):
        raise ImageError(
            f"{path}: the decoder gives {pixels.shape[1]}x{pixels.shape[0]} pixels but the header says "
            f"{header.width}x{header.height}; not read"
        )
    pixels = apply_orientation(pixels, header.orientation)
    return _split(pixels, header)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels the way EXIF orientation says they are to be shown."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    turn = transforms.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def write_image(path: str | Path, image: Image, *, replace: Replace = False, quality: int = 95) -> None:
    """Encode with the image's ICC profile and EXIF, atomically (temporary file in the target folder, then
    rename); without `replace` the commit is exclusive, so a file that appeared meanwhile is kept, and with
    a `Checked` (runtime/jobs/step.py check_output) only that checked file is replaced (core/files.py)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise ImageError(f"{path}: cannot write '{path.suffix}' files (supported: {', '.join(sorted(READABLE))})")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: cannot write {image.dtype} samples: 8- or 16-bit unsigned only")
    if suffix == ".png" and max(image.colour.shape[:2]) > LIBPNG_MAX_SIDE:
        raise ImageError(f"{path}: over {LIBPNG_MAX_SIDE:,} pixels wide or tall, which PNG readers refuse; write .tiff")
    if image.dtype == np.uint16 and suffix in EIGHT_BIT_ONLY:
        raise ImageError(f"{path}: {suffix} stores 8-bit samples only; write 16-bit images as .png or .tiff")
    if image.alpha is not None and suffix in NO_ALPHA:
        raise ImageError(f"{path}: {suffix} cannot store the alpha channel; write as .png, .webp or .tiff")
    if not path.parent.is_dir():
        raise ImageError(f"{path}: output folder does not exist")
    try:
        with atomic_path(path, replace=replace) as tmp:
            _encode(tmp, suffix, image, quality)
    except PermissionError:
        raise ImageError(f"{path}: permission denied (output folder not writable)") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except cv2.error as exc:
        raise ImageError(f"{path}: cannot encode ({_opencv_reason(str(exc))})") from None
    except _EncodeError as exc:
        raise ImageError(f"{path}: cannot encode ({exc})") from None


def _read_header(path: Path) -> _Header:
    """Pillow's lazy open: reads the header (and metadata before the pixel data), decodes no pixels."""
    try:
        with _pillow_quiet(), PILImage.open(path) as im:
            width, height = im.size
            # A JPEG's extra MPO pictures (depth maps, previews from phones) are not pages of the photo.
            frames = 1 if im.format in ("JPEG", "MPO") else getattr(im, "n_frames", 1)
            icc = im.info.get("icc_profile") or None
            grey_alpha = (im.format == "PNG" and _png_colour_type(path) == 4) or im.mode == "LA"
            tiff = im.format == "TIFF"
            # A TIFF's tags are its header; other formats' EXIF is parsed from the block in `info` (getexif()
            # on a PNG can decode the whole image to look for an eXIf chunk after the pixels).
            tags = im.getexif() if tiff else _exif_tags(im.info.get("exif"))
            tiff_orientation = tags.get(_ORIENTATION, 1) if tiff else 1
            orientation, exif = (1, None) if tiff else _upright_exif(im.info.get("exif"))
            software = tags.get(_SOFTWARE_TAG)
            unassociated = (
                tiff and im.mode == "RGBA" and _first(im.tag_v2.get(_EXTRA_SAMPLES_TAG)) == 2
                and _first(im.tag_v2.get(_BITS_PER_SAMPLE_TAG)) == 8  # Pillow reads 16-bit RGBA as 8-bit
            )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - Pillow parsing untrusted bytes raises many types (TypeError too)
        raise ImageError(f"{path}: cannot decode: damaged or not a {path.suffix} image ({first_line(exc)})") from None
    if tiff and grey_alpha:
        raise ImageError(f"{path}: grey+alpha TIFF is not supported (OpenCV drops its alpha): save it as PNG")
    if tiff and tiff_orientation >= 5:
        raise ImageError(f"{path}: TIFF orientation {tiff_orientation} (a quarter turn) unsupported: save it upright")
    return _Header(width, height, frames, orientation, grey_alpha, icc, exif, unassociated, software if isinstance(software, str) else None)


def _exif_tags(block: bytes | None) -> PILImage.Exif:
    exif = PILImage.Exif()
    if block:
        with contextlib.suppress(Exception):  # unreadable EXIF is dropped, as in _upright_exif
            exif.load(block)
    return exif


def _first(value: object) -> object:
    return value[0] if isinstance(value, tuple) and value else value


@contextlib.contextmanager
def _pillow_quiet() -> Iterator[None]:
    """Pillow's own decompression-bomb guard (a warning above 89 megapixels, an error above 179) would
    pre-empt ours, which names the size and the flag: switched off only while a header is read (Pillow
    keeps it as module state). Pillow's warnings (e.g. "Corrupt EXIF data") are kept off the terminal."""
    saved, log = PILImage.MAX_IMAGE_PIXELS, logging.getLogger("PIL")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)  # its modules' loggers inherit it: "More samples per pixel than ..."
    PILImage.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        PILImage.MAX_IMAGE_PIXELS = saved
        log.setLevel(level)


def _png_colour_type(path: Path) -> int:
    """The IHDR colour type (4 = grey+alpha): Pillow reports 16-bit grey+alpha as RGBA."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[25] if len(head) == 26 else -1


def _upright_exif(block: bytes | None) -> tuple[int, bytes | None]:
    """(orientation, the EXIF block with orientation 1, TIFF-structured). Unreadable EXIF is dropped; EXIF that
    reads but cannot be written back (a tag of an unexpected type) is dropped with its orientation kept."""
    if not block:
        return 1, None
    exif = PILImage.Exif()
    try:
        exif.load(block)
        orientation = exif.get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - Pillow parsing untrusted bytes raises many types
        return 1, None
    orientation = orientation if orientation in range(1, 9) else 1
    if not exif:
        return orientation, None
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    try:
        data = exif.tobytes()
    except Exception:  # noqa: BLE001 - e.g. a text tag stored as a rational: AttributeError from Pillow
        return orientation, None
    return orientation, data.removeprefix(b"Exif\x00\x00")


def _decode(path: Path, header: _Header) -> np.ndarray:
    """The pixels, in OpenCV's BGR(A) layout. Decoded from the file's bytes, never by path: a file name that is
    not valid UTF-8 (bytes smuggled in as lone surrogates) crashes OpenCV's path handling."""
    data = np.fromfile(path, np.uint8)
    if header.pillow_pixels:
        return _decode_with_pillow(path, data)
    with _stderr_captured() as printed:
        try:
            pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:
            raise ImageError(f"{path}: cannot decode ({_opencv_reason(str(exc))})") from None
    damage = _damage(printed[0])
    if damage is not None:
        raise ImageError(f"{path}: corrupt or truncated: {damage}")
    if pixels is None or pixels.size == 0:
        raise ImageError(f"{path}: cannot decode: truncated, corrupt or not a {path.suffix} image")
    return pixels


def _decode_with_pillow(path: Path, data: np.ndarray) -> np.ndarray:
    """An 8-bit RGBA TIFF with unassociated alpha (what Pillow, GIMP and tifffile write): OpenCV returns its
    colour premultiplied by alpha, Pillow as stored. Truncated data is an error (LOAD_TRUNCATED_IMAGES off)."""
    try:
        with _pillow_quiet(), PILImage.open(io.BytesIO(data.tobytes())) as im:
            rgba = np.asarray(im.convert("RGBA") if im.mode != "RGBA" else im)
    except Exception as exc:  # noqa: BLE001 - as in _read_header
        raise ImageError(f"{path}: corrupt or truncated: {first_line(exc)}") from None
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)


def _split(pixels: np.ndarray, header: _Header) -> Image:
    """OpenCV's BGR(A) layout to an Image; grey+alpha comes back from OpenCV as BGRA with B = G = R."""
    meta = {"icc": header.icc, "exif": header.exif}
    if pixels.ndim == 2:
        return Image(pixels, **meta)
    channels = pixels.shape[2]
    if channels == 1:
        return Image(pixels[..., 0], **meta)
    if header.grey_alpha:
        return Image(np.ascontiguousarray(pixels[..., 0]), np.ascontiguousarray(pixels[..., -1]), **meta)
    colour = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB if channels == 4 else cv2.COLOR_BGR2RGB)
    return Image(colour, np.ascontiguousarray(pixels[..., 3]) if channels == 4 else None, **meta)


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where libjpeg, libpng, libtiff and OpenCV's log write) to a temporary
    file for the block; yields a list that holds the captured text once the block ends. fd 2 is process-wide,
    so captures hold CAPTURE_LOCK: one at a time, and code on other threads that prints to stderr takes it
    too (runtime/jobs/pipelined.py does), or its text would land in the capture."""
    with CAPTURE_LOCK:
        sys.stderr.flush()
        saved = os.dup(2)
        printed: list[str] = []
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield printed
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                printed.append(sink.read().decode(errors="replace"))


def _damage(printed: str) -> str | None:
    """The first decoder line that reports damage, without OpenCV's log prefix; None if there is none."""
    for line in printed.splitlines():
        line = re.sub(r"^\[[^\]]*\]\s*(global\s+\S+\s+\S+\s+)?", "", line.strip())
        if line and _DAMAGE.search(line) and not _HARMLESS.search(line):
            return _opencv_reason(line)
    return None


def _opencv_reason(text: str) -> str:
    """The cause in an OpenCV error ("... error: (-2:Unspecified error) CAUSE in function 'f'"), one line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else text
    match = re.search(r"error: \(-?\d+:[^)]*\)\s*(.*?)(?: in function .*)?$", line)
    return (match.group(1) if match and match.group(1) else line)[:200]


class _EncodeError(Exception):
    """OpenCV declined to encode; the message is what it printed, or that it said nothing."""


def _encode(tmp: Path, suffix: str, image: Image, quality: int) -> None:
    """Write `image` to `tmp` in the format `suffix` names."""
    if suffix in _TIFF:
        _write_tiff(tmp, image)
        return
    if suffix == ".png":
        with open(tmp, "wb") as stream:
            write_png(stream, _interleaved(image, rgb=True), icc=image.icc, exif=_marked_exif(image.exif))
        return
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, quality], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality]}
    params[".webp"] = [cv2.IMWRITE_WEBP_QUALITY, 101]  # lossless
    kinds, blocks = [], []
    if suffix != ".bmp":
        for kind, block in ((cv2.IMAGE_METADATA_ICCP, image.icc), (cv2.IMAGE_METADATA_EXIF, _marked_exif(image.exif))):
            if block:
                kinds.append(kind)
                blocks.append(np.frombuffer(block, np.uint8))
    data = _interleaved(image, rgb=False)
    with _stderr_captured() as printed:
        ok, encoded = cv2.imencodeWithMetadata(suffix, data, kinds, blocks, params.get(suffix, []))
    if not ok:
        raise _EncodeError(_damage(printed[0]) or "OpenCV gives no reason")
    tmp.write_bytes(encoded.tobytes())  # by Python, not by path in C: see _decode


def _interleaved(image: Image, rgb: bool) -> np.ndarray:
    """Colour and alpha as one contiguous array: grey, grey+alpha (PNG only: OpenCV has no such layout and
    gets BGRA), RGB or RGBA when `rgb`, else OpenCV's BGR and BGRA."""
    colour = image.colour if image.is_grey or rgb else image.colour[..., ::-1]
    if image.alpha is None:
        return np.ascontiguousarray(colour)
    if image.is_grey and not rgb:
        colour = np.repeat(colour[..., None], 3, axis=2)
    return np.dstack([colour, image.alpha])


def _marked_exif(block: bytes | None) -> bytes:
    """The image's EXIF (TIFF-structured) with the Software tag set to SOFTWARE, or a new block with only it."""
    exif = _exif_tags(block)
    exif[_SOFTWARE_TAG] = SOFTWARE
    return exif.tobytes().removeprefix(b"Exif\x00\x00")


def _write_tiff(tmp: Path, image: Image) -> None:
    """TIFF with the ICC profile (tag 34675); grey+alpha is written as RGBA, which OpenCV reads back."""
    if image.alpha is None:
        data, photometric, extra = image.colour, ("minisblack" if image.is_grey else "rgb"), None
    else:
        rgb = np.repeat(image.colour[..., None], 3, axis=2) if image.is_grey else image.colour
        data, photometric, extra = np.dstack([rgb, image.alpha]), "rgb", ["unassalpha"]
    # Deflate level 1 with the horizontal predictor: as small as OpenCV's LZW TIFFs and as fast to write.
    tifffile.imwrite(
        tmp, data, photometric=photometric, extrasamples=extra, iccprofile=image.icc, software=SOFTWARE,
        compression="zlib", compressionargs={"level": 1}, predictor=True,
    )  # fmt: skip
