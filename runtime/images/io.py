"""Read and write images, keeping what the file says and refusing what would come out wrong.

Kept: bit depth (by the sample type, never by pixel values), greyscale, grey+alpha, alpha (transparency in
any encoding: an alpha channel, a PNG tRNS colour key or palette alpha, a TIFF extra sample, a BMP alpha
mask), the ICC colour profile, EXIF (with orientation applied to the pixels and reset to 1). RGB order
inside the program, BGR only at OpenCV's edge.

Reading is two steps. The header (`_read_header`: Pillow's lazy open, with this module's own parse of the
PNG, TIFF and BMP fields that decide the layout) says everything that is decided before a pixel is decoded:
the size, frames, the layout the image will have (grey or colour, alpha or not, 8 or 16 bits), the ICC
profile and EXIF, and which decoder reads the pixels. Animations, multi-page files, images above a pixel
limit and encodings that cannot be read faithfully (float or signed TIFF samples, CMYK, a profile for
another colour space) are refused there, with the cause named. `output_problem` answers from the same
header, before any inference, whether an output format can hold the result, with the words write_image
would use.

Then the pixels: OpenCV (IMREAD_UNCHANGED, the only mode that keeps alpha and 16 bits) for PNG, JPEG,
WebP, BMP and the TIFFs it reads as stored; tifffile for TIFFs in the compressions it decodes by itself
(raw samples for every layout: separate planes, tiles, grey+alpha, 1/2/4 bits); Pillow for the other 8-bit
TIFFs (LZW, JPEG, CCITT). `_conform` then gives the decoded samples the layout the header decided (a tRNS
colour key becomes alpha, MinIsWhite is inverted, associated alpha is divided out, 1/2/4-bit samples are
scaled to 8 bits) or refuses, so read_image and output_problem never disagree. The C decoders report
damage only as text on stderr (libjpeg returns a half-grey image after "Premature end of JPEG file"), so
file descriptor 2 is captured while decoding: a message that says the data is corrupt or truncated makes
the read fail with that message; other library chatter is dropped. Nothing the libraries print reaches the
terminal. OpenCV's log level is left alone: its log goes to the same descriptor, and the level is
process-wide state.

Writing is atomic and, unless `replace`, exclusive: never a partial file, never another process's result
replaced. Pixels and metadata are written by runtime/images/png.py for PNG (every colour type at 8 and 16 bits,
deflated on every core; ICC and EXIF), by OpenCV for JPEG (ICC and EXIF; an ICC profile over one APP2
marker is split over several here, ICC.1 Annex B.4), WebP (ICC and EXIF) and BMP (an ICC profile moves
its header to BITMAPV5HEADER), and by tifffile for TIFF (ICC; OpenCV's TIFF writer takes no metadata).
Only OpenCV's encoders report through stderr, so only they run inside the capture of file descriptor 2;
PNG and TIFF writing raise exceptions and run beside other threads' decoding.
"""

from __future__ import annotations

import contextlib
import logging
import lzma
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import PngImagePlugin

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
def mark(scale: float = SCALE) -> str:
    """The Software tag of a result `scale` times its input's size (x4, or --outscale)."""
    return f"lsanet-deploy x{scale:g}"


def scaled_size(width: int, height: int, scale: float = SCALE) -> tuple[int, int]:
    """(width, height) of the result `scale` times an input's size: rounded, at least 1 pixel."""
    return max(1, round(width * scale)), max(1, round(height * scale))


SOFTWARE = mark()


@dataclass(frozen=True)
class Encoding:
    """How lossy formats are written: JPEG quality (1-100), WebP quality (1-100, lossy) or None (lossless,
    the default: a result keeps every level the network computed)."""

    jpeg_quality: int = 95
    webp_quality: int | None = None
UNMARKED = {".bmp"}
_SOFTWARE_TAG = 0x0131
_ORIENTATION = 0x0112
_TIFF = {".tif", ".tiff"}
_JPEG = {".jpg", ".jpeg"}
# Format limits, known from the size before anything is encoded.
_WEBP_MAX_SIDE = 16_383  # 14-bit width and height fields (VP8L and VP8X headers, RFC 9649)
_JPEG_MAX_SIDE = 65_500  # libjpeg's JPEG_MAX_DIMENSION (the SOF fields hold 65,535)
_BMP_MAX_BYTES = 2**32 - 1  # BITMAPFILEHEADER bfSize is 32 bits
_ICC_PER_APP2 = 65_519  # 65,535 - 2 length bytes - "ICC_PROFILE\0" - sequence number - count (ICC.1 B.4)
_JPEG_MAX_ICC = 255 * _ICC_PER_APP2  # the sequence number and count are one byte each
_JPEG_MAX_EXIF = 65_527  # one APP1 marker: 65,535 - 2 length bytes - "Exif\0\0"
# An ICC profile or a compressed text chunk of a PNG may decompress to this much (Pillow's own limit,
# 1 MiB, refuses valid files with large profiles); beyond it, a decompression bomb is the likelier story.
_MAX_ZCHUNK = 64 << 20
# libpng ignores a larger iCCP profile ("profile too long": PNG_USER_CHUNK_MALLOC_MAX), so a PNG result
# with one would lose its colours in most readers; OpenCV's own PNG chunk reader refuses the whole file
# for any chunk before IDAT (but tEXt) over 7,999,988 bytes: ancillary chunks from _PNG_BIG_CHUNK up are
# left out of the bytes it decodes (their content comes from the header: ICC, EXIF).
_PNG_MAX_ICC = 8_000_000
_PNG_BIG_CHUNK = 1 << 20
# Lines the decoders print that mean the pixels are incomplete or wrong (libjpeg warnings, libpng and
# libtiff errors, OpenCV's own error log); "extraneous bytes before marker 0xd9" is junk after the last
# scan, common in camera files, with every pixel decoded.
# Held while fd 2 is redirected (see _stderr_captured); re-entrant, as a flush inside may print.
CAPTURE_LOCK = threading.RLock()
_DAMAGE = re.compile(r"premature end|corrupt|bad huffman|invalid sos|progression|resync|error", re.IGNORECASE)
_HARMLESS = re.compile(r"extraneous bytes before marker 0xd9", re.IGNORECASE)
# Pillow's limits are module state: changed and restored by one reader at a time (_pillow_quiet).
_LIBRARY_STATE_LOCK = threading.RLock()


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
    outscale: float = SCALE  # the scale the mark that write_image writes states (a result of --outscale)
    encoding: Encoding = Encoding()  # how write_image encodes it into JPEG or WebP

    @property
    def dtype(self) -> np.dtype:
        return self.colour.dtype

    @property
    def is_grey(self) -> bool:
        return self.colour.ndim == 2

    @property
    def planes(self) -> int:
        """Samples per pixel: grey or RGB, and alpha."""
        return (1 if self.is_grey else 3) + (self.alpha is not None)


@dataclass
class _Header:
    """What the file's header says, before any pixel is decoded: the size and the layout read_image gives
    (grey, alpha, depth), the metadata, and how the decoded samples are made into that layout."""

    width: int  # as stored, before orientation
    height: int
    frames: int
    orientation: int  # the orientation this module applies after decoding (EXIF, or a TIFF's flips)
    grey: bool
    alpha: bool
    depth: int  # 8 or 16: bits per sample of the Image
    icc: bytes | None
    exif: bytes | None  # TIFF-structured, orientation reset to 1
    software: str | None = None  # EXIF/TIFF Software tag: SOFTWARE marks this tool's results
    decoder: str = "opencv"  # "opencv", "tifffile" or "pillow"
    key: tuple[int, ...] | None = None  # PNG tRNS colour key at the decoded depth: alpha computed here
    invert: bool = False  # TIFF MinIsWhite whose decoder gives the stored samples
    bits: int = 8  # stored bits per sample when the decoder gives 1/2/4-bit values unscaled
    associated: bool = False  # TIFF ExtraSamples 1: colour premultiplied by alpha, divided out here
    drop: tuple[tuple[int, int], ...] = ()  # (offset, length) of PNG chunks left out of the pixel decoder's bytes

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


def is_result_of(source: str | Path, target: str | Path, scale: float = SCALE) -> bool:
    """Whether `target` is this tool's result `scale` times `source`'s size: exactly that size (from the
    headers) and marked for that scale (`mark`; so never a file of a format in UNMARKED). Only such a file
    may --overwrite replace, and only such a file is a re-run's complete result: a photo that an unquoted
    glob made the OUTPUT is not, even when it happens to be 4x the size."""
    try:
        width, height = image_size(source)
        header = _read_header(Path(target))
    except ImageError:
        return False
    return header.software == mark(scale) and header.shown_size == scaled_size(width, height, scale)


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode an image file; ImageError with the cause for anything that is not one complete image."""
    path = Path(path)
    header = _checked_header(path, max_pixels)
    samples, bgr, oriented = _decode(path, header)
    colour, alpha = _conform(path, samples, bgr, header)
    if not oriented:
        colour = apply_orientation(colour, header.orientation)
        alpha = None if alpha is None else apply_orientation(alpha, header.orientation)
    return Image(colour, alpha, header.icc, header.exif)


def output_problem(
    source: str | Path, target_suffix: str, max_pixels: int = DEFAULT_MAX_PIXELS, scale: float = SCALE
) -> str | None:
    """Why the x4 result of `source` cannot be written as `target_suffix` (".jpg", "jpg"), decided from the
    source's header alone, before any pixel is decoded: the message write_image would give after the
    target's name (`f"{target}: {problem}"`), or None when the format holds the result. Checked: the
    format is writable; side limits (PNG 1,000,000, WebP 16,383, JPEG 65,500) and BMP's 4 GiB; 16-bit
    samples into JPEG, WebP or BMP; alpha (tRNS included) into JPEG or BMP; an ICC profile or EXIF larger
    than a JPEG holds; a greyscale ICC profile on a greyscale image a format would store as RGB.
    Raises the ImageError read_image would raise for a source it refuses from its header (unreadable,
    animated, above `max_pixels`, an encoding that is not supported)."""
    header = _checked_header(Path(source), max_pixels)
    width, height = header.shown_size
    suffix = target_suffix if target_suffix.startswith(".") else f".{target_suffix}"
    return _output_problem(suffix, *scaled_size(width, height, scale), header.grey, header.alpha, header.depth,
                           header.icc, header.exif)  # fmt: skip


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


def write_image(path: str | Path, image: Image, *, replace: Replace = False) -> None:
    """Encode with the image's ICC profile and EXIF, atomically (temporary file in the target folder, then
    rename); without `replace` the commit is exclusive, so a file that appeared meanwhile is kept, and with
    a `Checked` (runtime/jobs/step.py check_output) only that checked file is replaced (core/files.py).
    What the format cannot hold is refused before anything is written, in `output_problem`'s words."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise ImageError(f"{path}: {_output_problem(path.suffix, 1, 1, True, False, 8, None, None)}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: cannot write {image.dtype} samples: 8- or 16-bit unsigned only")
    height, width = image.colour.shape[:2]
    problem = _output_problem(suffix, width, height, image.is_grey, image.alpha is not None,
                              8 * image.dtype.itemsize, image.icc, image.exif)  # fmt: skip
    if problem is not None:
        raise ImageError(f"{path}: {problem}")
    if not path.parent.is_dir():
        raise ImageError(f"{path}: output folder does not exist")
    try:
        with atomic_path(path, replace=replace) as tmp:
            _encode(tmp, suffix, image)
    except PermissionError:
        raise ImageError(f"{path}: permission denied (output folder not writable)") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except cv2.error as exc:
        raise ImageError(f"{path}: cannot encode ({_opencv_reason(str(exc))})") from None
    except _EncodeError as exc:
        raise ImageError(f"{path}: cannot encode ({exc})") from None


# ------------------------------------------------------------------------------ what formats can hold


def _output_problem(suffix: str, width: int, height: int, grey: bool, alpha: bool, depth: int,
                    icc: bytes | None, exif: bytes | None) -> str | None:  # fmt: skip
    """Why a `width` x `height` image of this layout and metadata cannot be written as `suffix`, or None:
    the one rule behind write_image's refusals and output_problem."""
    kind = suffix.lower()
    if kind not in READABLE:
        return f"cannot write '{suffix}' files (supported: {', '.join(sorted(READABLE))})"
    side = max(width, height)
    if kind == ".png" and side > LIBPNG_MAX_SIDE:
        return f"over {LIBPNG_MAX_SIDE:,} pixels wide or tall, which PNG readers refuse; write .tiff"
    if kind == ".webp" and side > _WEBP_MAX_SIDE:
        return f"over {_WEBP_MAX_SIDE:,} pixels wide or tall, which WebP cannot hold; write .png or .tiff"
    if kind in _JPEG and side > _JPEG_MAX_SIDE:
        return f"over {_JPEG_MAX_SIDE:,} pixels wide or tall, which JPEG cannot hold; write .png or .tiff"
    if depth == 16 and kind in EIGHT_BIT_ONLY:
        return f"{kind} stores 8-bit samples only; write 16-bit images as .png or .tiff"
    if alpha and kind in NO_ALPHA:
        return f"{kind} cannot store the alpha channel; write as .png, .webp or .tiff"
    if kind == ".bmp" and _bmp_bytes(width, height, grey, icc) > _BMP_MAX_BYTES:
        return "over 4 GiB, which a BMP file cannot hold; write .png or .tiff"
    if kind == ".png" and icc and len(icc) > _PNG_MAX_ICC:
        return (f"its ICC profile ({len(icc):,} bytes) is larger than libpng reads ({_PNG_MAX_ICC:,} bytes); "
                "write .tiff, .webp or .jpg")  # fmt: skip
    if kind in _JPEG and icc and len(icc) > _JPEG_MAX_ICC:
        return (f"its ICC profile ({len(icc):,} bytes) is larger than a JPEG holds ({_JPEG_MAX_ICC:,} bytes in "
                "255 APP2 markers); write .png, .webp or .tiff")  # fmt: skip
    if kind in _JPEG:
        size = len(_marked_exif(exif))
        if size > _JPEG_MAX_EXIF:
            return (f"its EXIF ({size:,} bytes) is larger than a JPEG's APP1 marker holds ({_JPEG_MAX_EXIF:,} "
                    "bytes); write .png or .webp")  # fmt: skip
    space = _icc_space(icc)
    stored_grey = grey and not (kind == ".webp" or (kind in _TIFF and alpha))
    if space == "GRAY" and not stored_grey:
        if kind == ".webp":
            others = ".png or .tiff" if alpha else ".png, .jpg or .tiff"
            return (f"{kind} has no greyscale, so it would hold this greyscale image as RGB, which its "
                    f"greyscale ICC profile cannot describe; write as {others}")  # fmt: skip
        if kind in _TIFF:
            return ("grey+alpha TIFF is written as RGBA, which its greyscale ICC profile cannot describe; "
                    "write as .png")  # fmt: skip
        return "its ICC profile is for greyscale, the image is RGB"
    if space is not None and space != "GRAY" and stored_grey:
        return f"its ICC profile is for {space} data, the image is greyscale"
    if space not in (None, "GRAY", "RGB"):
        return f"its ICC profile is for {space} data, the image is RGB"
    return None


def _bmp_bytes(width: int, height: int, grey: bool, icc: bytes | None) -> int:
    """The size of the BMP write_image makes: rows padded to 4 bytes; a palette for grey; the profile."""
    row = (width * (1 if grey else 3) + 3) // 4 * 4
    return 54 + (1024 if grey else 0) + row * height + (84 + len(icc) if icc else 0)


def _icc_space(icc: bytes | None) -> str | None:
    """An ICC profile's data colour space (ICC.1 7.2.6, header bytes 16-19: "RGB", "GRAY", "CMYK", ...), or
    None when the bytes do not start with a profile header (signature 'acsp' at 36, ICC.1 7.2.9)."""
    if not icc or len(icc) < 128 or icc[36:40] != b"acsp":
        return None
    return icc[16:20].decode("latin-1").strip() or None


# ------------------------------------------------------------------------------------------ headers


def _checked_header(path: Path, max_pixels: int) -> _Header:
    """The header, after every check read_image makes before decoding."""
    if not path.is_file():
        raise ImageError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    reason = skip_reason(path)
    if reason is not None:
        raise ImageError(f"{path}: {reason}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    header = _read_header(path)
    if header.width <= 0 or header.height <= 0:
        raise ImageError(f"{path}: cannot decode: damaged (the header says {header.width}x{header.height} pixels)")
    if header.frames > 1:
        raise ImageError(f"{path}: has {header.frames} pages/frames; only single images are supported")
    if header.width * header.height > max_pixels:
        raise ImageError(
            f"{path}: {header.width}x{header.height} is {header.width * header.height} pixels, above the limit of "
            f"{max_pixels} (the result has 16 times as many); raise it with --max-pixels if this is intended"
        )
    return header


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _read_header(path: Path) -> _Header:
    """The header of any supported file, by its content (a JPEG named .png is read as the JPEG it is)."""
    if _is_tiff(path):
        header = _tiff_header(path)
    else:
        header = _pillow_header(path)
    space = _icc_space(header.icc)
    if space is not None and space != ("GRAY" if header.grey else "RGB"):
        raise ImageError(
            f"{path}: its ICC profile is for {space} data, but the image is {'greyscale' if header.grey else 'RGB'}; "
            "not read (its colours would be wrong): remove the profile, or convert the image to match it"
        )
    return header


def _pillow_header(path: Path) -> _Header:
    """Pillow's lazy open: reads the header (and metadata before the pixel data), decodes no pixels."""
    try:
        with _pillow_quiet(), PILImage.open(path) as im:
            width, height = im.size
            fmt, mode = im.format, im.mode
            # A JPEG's extra MPO pictures (depth maps, previews from phones) are not pages of the photo.
            frames = 1 if fmt in ("JPEG", "MPO") else getattr(im, "n_frames", 1)
            icc = im.info.get("icc_profile") or None
            # EXIF is parsed from the block in `info` (getexif() on a PNG can decode the whole image to look
            # for an eXIf chunk after the pixels).
            exif_block = im.info.get("exif")
    except Exception as exc:  # noqa: BLE001 - Pillow parsing untrusted bytes raises many types (TypeError too)
        if "MAX_TEXT_CHUNK" in str(exc):
            raise ImageError(f"{path}: a PNG chunk decompresses to over {_MAX_ZCHUNK >> 20} MiB; not read "
                             "(a decompression bomb?)") from None  # fmt: skip
        raise ImageError(f"{path}: cannot decode: damaged or not a {path.suffix} image ({first_line(exc)})") from None
    with _library_quiet():  # "Corrupt EXIF data" is Pillow's warning, not this program's
        tags = _exif_tags(exif_block)
        orientation, exif = _upright_exif(exif_block)
    software = tags.get(_SOFTWARE_TAG)
    header = _Header(width, height, frames, orientation, False, False, 8, icc, exif,
                     software if isinstance(software, str) else None)  # fmt: skip
    if fmt == "PNG":
        _png_layout(path, header)
    elif fmt in ("JPEG", "MPO"):
        if mode == "CMYK":
            raise ImageError(f"{path}: CMYK colour (for print) is not supported: convert it to RGB")
        if mode not in ("L", "RGB", "YCbCr"):
            raise ImageError(f"{path}: a JPEG of {mode} samples is not supported (greyscale and colour only)")
        header.grey = mode == "L"
    elif fmt == "WEBP":
        header.alpha = mode == "RGBA"
    elif fmt in ("BMP", "DIB"):
        _bmp_layout(path, header)
    else:
        raise ImageError(f"{path}: holds a {fmt} image, which is not supported (PNG, JPEG, WebP, TIFF and BMP are)")
    return header


def _png_layout(path: Path, header: _Header) -> None:
    """Grey or colour, alpha and depth from IHDR, PLTE and tRNS (PNG specification, third edition: 11.2.1
    IHDR, 11.2.2 PLTE, 11.3.2.1 tRNS). Alpha: colour types 4 and 6; a tRNS colour key (types 0 and 2: the
    pixels of exactly that value are transparent); palette alpha (type 3) with an entry below 255. A tRNS
    chunk that libpng ignores (wrong length, with types 4 and 6, none before PLTE) gives no alpha."""
    colour_type, depth, palette, trns, drop = -1, 8, None, None, []
    with open(path, "rb") as f:
        f.read(8)
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND"):
                break
            if length >= _PNG_BIG_CHUNK and kind[0] & 0x20:  # ancillary (5.4: bit 5 of the first byte)
                drop.append((f.tell() - 8, length + 12))
            if kind in (b"IHDR", b"PLTE", b"tRNS") and length <= 768:
                body = f.read(length)
                if kind == b"IHDR" and length == 13:
                    depth, colour_type = body[8], body[9]
                elif kind == b"PLTE" and palette is None:
                    palette = length // 3
                elif kind == b"tRNS" and trns is None:
                    trns = body
                f.seek(4, 1)
            else:
                f.seek(length + 4, 1)
    header.grey = colour_type in (0, 4)
    header.depth = 16 if depth == 16 else 8
    header.drop = tuple(drop)
    header.alpha = colour_type in (4, 6)
    if trns is None:
        return
    if (colour_type, len(trns)) in ((0, 2), (2, 6)):
        mask = (1 << depth) - 1  # 11.3.2.1: bits above the depth are masked off before the key is used
        key = [v & mask for v in struct.unpack(f">{len(trns) // 2}H", trns)]
        if depth < 8:  # the decoder scales 1/2/4-bit samples to 8 bits (bit replication, 12.4)
            key = [v * (255 // mask) for v in key]
        header.key, header.alpha = tuple(key), True
    elif colour_type == 3 and palette is not None and 0 < len(trns) <= palette:
        header.alpha = any(a < 255 for a in trns)  # all 255: no pixel can be transparent


def _bmp_layout(path: Path, header: _Header) -> None:
    """Grey, alpha and the ICC profile from the BMP headers, by the rules OpenCV's decoder follows: a palette
    of greys is greyscale; alpha is the 4th byte of a 32-bit pixel only where a BITFIELDS header names an
    alpha mask (BITMAPV3/V4/V5; BI_RGB's 4th byte is unused); an embedded profile (BITMAPV5HEADER
    bV5CSType 'MBED', bV5ProfileData from the header's start, bV5ProfileSize). A linked profile (a path
    in the file) is never followed."""
    with open(path, "rb") as f:
        data = f.read(14 + 124 + 16 + 1024)
    try:
        size = struct.unpack_from("<I", data, 14)[0]
        if size == 12:  # OS/2 BITMAPCOREHEADER: 3-byte palette entries, no compression field
            bits, compression, used, entry = struct.unpack_from("<H", data, 24)[0], 0, 0, 3
        else:
            bits, compression = struct.unpack_from("<HI", data, 28)
            used, entry = struct.unpack_from("<I", data, 46)[0], 4
        alpha_mask = 0
        if compression in (3, 6):  # BI_BITFIELDS, BI_ALPHABITFIELDS
            if size >= 56:
                alpha_mask = struct.unpack_from("<I", data, 14 + 52)[0]
            elif compression == 6:
                alpha_mask = struct.unpack_from("<I", data, 14 + size + 12)[0]
        if bits == 16 and alpha_mask:
            raise ImageError(f"{path}: a 16-bit BMP with an alpha mask is not supported: save it as PNG")
        header.alpha = bits == 32 and alpha_mask != 0
        if bits <= 8:
            count = min(used or 1 << bits, 1 << bits)
            masks = {3: 12, 6: 16}.get(compression, 0) if size == 40 else 0  # BITFIELDS masks after the header
            start = 14 + size + masks
            table = np.frombuffer(data, np.uint8, count * entry, start).reshape(count, entry)
            header.grey = bool(np.all(table[:, 0] == table[:, 1]) and np.all(table[:, 1] == table[:, 2]))
        if size >= 124 and data[14 + 56 : 14 + 60] == b"DEBM":  # 'MBED' as a little-endian DWORD
            offset, length = struct.unpack_from("<II", data, 14 + 112)
            with open(path, "rb") as f:
                f.seek(14 + offset)
                icc = f.read(length)
            header.icc = icc if len(icc) == length and length else None
    except (struct.error, ValueError):
        pass  # a header too short for these fields: OpenCV's decoder says what is wrong


_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point", 4: "untyped",
                   5: "complex integer", 6: "complex floating-point"}  # fmt: skip
_PHOTOMETRIC = {0: "MinIsWhite", 1: "MinIsBlack", 2: "RGB", 3: "palette", 4: "transparency mask", 5: "CMYK",
                6: "YCbCr", 8: "CIELab", 9: "ICCLab", 10: "ITULab", 32803: "colour filter array",
                32844: "LogL", 32845: "LogLuv", 34892: "linear raw"}  # fmt: skip
# Compressions tifffile decodes without imagecodecs: none, Deflate (both codes), PackBits, LZMA.
_TIFFFILE_CODECS = {1, 8, 32946, 32773, 34925}
_COMPRESSION_NAMES = {1: "no", 2: "CCITT RLE", 3: "CCITT G3", 4: "CCITT G4", 5: "LZW", 6: "old JPEG", 7: "JPEG",
                      8: "Deflate", 32773: "PackBits", 32946: "Deflate", 34925: "LZMA", 50000: "Zstandard",
                      50001: "WebP", 34712: "JPEG 2000"}  # fmt: skip


def _tiff_header(path: Path) -> _Header:
    """The first IFD's tags (TIFF 6.0), read by tifffile (no pixels): what each sample is, the layout it
    gives, and the decoder that reads it as stored. Refused here, with the cause: samples that are not
    1/2/4/8/16-bit unsigned integers (SampleFormat 2 and 3, 32-bit), colour spaces other than grey, RGB and
    palette (CMYK, CIELab, ...), more than one extra sample, quarter-turn orientations, and image data that
    lies beyond the end of the file."""
    try:
        with _library_quiet(), tifffile.TiffFile(path) as tif:
            frames = len(tif.pages)
            page = tif.pages.first
            tags = {tag.code: tag.value for tag in page.tags.values()}
            offsets, counts = page.dataoffsets, page.databytecounts
            colormap = page.colormap if 320 in tags else None
    except Exception as exc:  # noqa: BLE001 - tifffile parsing untrusted bytes raises many types
        raise ImageError(f"{path}: cannot decode: damaged or not a {path.suffix} image ({first_line(exc)})") from None

    def values(code: int, default: int) -> tuple[int, ...]:
        """A tag's numbers (one or many); a tag of another type, or empty, is damage."""
        value = tags.get(code, default)
        numbers = tuple(int(v) for v in value) if isinstance(value, (tuple, list, np.ndarray)) else (int(value),)
        if not numbers:
            raise ValueError(f"tag {code} is empty")
        return numbers

    try:
        width, height = values(256, 0)[0], values(257, 0)[0]
        spp = values(277, 1)[0]
        bits_all, formats = values(258, 1), values(339, 1)
        bits, sample_format = bits_all[0], formats[0]
        compression, planar, predictor = values(259, 1)[0], values(284, 1)[0], values(317, 1)[0]
        photometric = values(262, 2 if spp >= 3 else 1)[0]
        extra_codes = values(338, 0) if 338 in tags else ()
        orientation = values(274, 1)[0]
        depth_tag = values(32997, 1)[0]
        rows_per_strip = values(278, 2**32 - 1)[0]
        tile = (values(322, 0)[0], values(323, 0)[0]) if 322 in tags else None
    except (TypeError, ValueError, OverflowError) as exc:  # a fuzzed or hand-made tag of the wrong type
        raise ImageError(
            f"{path}: cannot decode: damaged or not a {path.suffix} image (a TIFF tag: {first_line(exc)})"
        ) from None
    icc = bytes(tags[34675]) if isinstance(tags.get(34675), (bytes, bytearray)) and tags[34675] else None
    software = tags.get(305) if isinstance(tags.get(305), str) else None
    if len(set(bits_all)) > 1 or len(set(formats)) > 1:
        raise ImageError(
            f"{path}: TIFF samples of different sizes or types (BitsPerSample {bits_all}) are not supported"
        )
    kind = _SAMPLE_FORMATS.get(sample_format, f"SampleFormat {sample_format}")
    if sample_format not in (1, 4) or bits not in (1, 2, 4, 8, 16):
        raise ImageError(f"{path}: {bits}-bit {kind} samples (TIFF SampleFormat {sample_format}) are not supported "
                         "(8- or 16-bit unsigned integer images only)")  # fmt: skip
    if photometric == 5:
        raise ImageError(f"{path}: CMYK colour (TIFF Photometric 5, for print) is not supported: convert it to RGB")
    if photometric not in (0, 1, 2, 3, 6):
        name = _PHOTOMETRIC.get(photometric, "unknown")
        raise ImageError(f"{path}: TIFF Photometric {photometric} ({name}) is not supported: greyscale, RGB and "
                         "palette TIFFs only")  # fmt: skip
    if depth_tag > 1:
        raise ImageError(f"{path}: a volume TIFF (ImageDepth {depth_tag}) is not supported: only single images are")
    colours = 3 if photometric in (2, 6) else 1
    extra = spp - colours
    if extra < 0:
        raise ImageError(
            f"{path}: cannot decode: damaged (TIFF Photometric {photometric} with {spp} sample(s) per pixel)"
        )
    if extra > 1:
        raise ImageError(f"{path}: {extra} extra samples per pixel (TIFF ExtraSamples {extra_codes or 'absent'}): "
                         "only one, an alpha channel, is supported")  # fmt: skip
    # A palette with alpha (Pillow's PA: 8-bit indices and an unassociated alpha sample) is read by Pillow.
    if extra and (bits < 8 or (photometric == 3 and (bits != 8 or extra_codes[:1] not in ((), (2,))))):
        raise ImageError(f"{path}: a {bits}-bit {_PHOTOMETRIC[photometric]} TIFF with an extra sample "
                         f"(ExtraSamples {extra_codes or 'absent'}) is not supported")  # fmt: skip
    if orientation >= 5 and orientation <= 8:
        raise ImageError(f"{path}: TIFF orientation {orientation} (a quarter turn) unsupported: save it upright")
    if planar not in (1, 2):
        raise ImageError(f"{path}: cannot decode: damaged (TIFF PlanarConfiguration {planar})")
    # TIFF 6.0 sections 3 and 15: the strips (or tiles) that cover the image, per plane when planar.
    planes = spp if planar == 2 else 1
    if tile is not None:
        if min(tile) <= 0:
            raise ImageError(f"{path}: cannot decode: damaged (TIFF tiles of {tile[0]}x{tile[1]})")
        expected = -(-width // tile[0]) * -(-height // tile[1]) * planes
    else:
        expected = -(-height // max(1, min(rows_per_strip, height))) * planes
    if min(len(offsets), len(counts)) < expected:
        raise ImageError(f"{path}: corrupt or truncated: {min(len(offsets), len(counts))} strips or tiles, where the "
                         f"image needs {expected}")  # fmt: skip
    size = path.stat().st_size
    for offset, count in zip(offsets, counts):
        if not count:
            raise ImageError(f"{path}: corrupt or truncated: a strip or tile of its image data is missing")
        if offset + count > size:
            raise ImageError(f"{path}: corrupt or truncated: its image data runs to byte {offset + count}, "
                             f"the file has {size}")  # fmt: skip
    if photometric == 3 and (colormap is None or colormap.shape != (3, 1 << bits)):
        raise ImageError(f"{path}: cannot decode: damaged (a palette TIFF without a ColorMap of {1 << bits} colours)")
    # ExtraSamples 1 is associated alpha (colour premultiplied); 2, and 0 or no tag (what OpenCV writes,
    # and what libtiff reads as alpha), are taken as unassociated: the samples are kept as stored.
    associated = extra == 1 and extra_codes[:1] == (1,)
    if photometric == 6 and bits != 8:
        raise ImageError(f"{path}: a {bits}-bit YCbCr TIFF is not supported: save it as RGB")
    # A palette gives 8-bit RGB whatever the index size (its colours are read as the ColorMap's high bytes).
    header = _Header(width, height, frames, orientation if orientation in (2, 3, 4) else 1,
                     photometric in (0, 1), extra == 1, 16 if bits == 16 and photometric != 3 else 8, icc, None,
                     software, associated=associated)  # fmt: skip
    how = _COMPRESSION_NAMES.get(compression, f"compression {compression}")
    what = f"{bits}-bit {'grey+alpha' if header.grey and header.alpha else _PHOTOMETRIC[photometric]}"
    # tifffile unpacks 2- and 4-bit samples only with imagecodecs: those go to Pillow, which reads them all.
    if photometric == 3 and extra:
        header.decoder = "pillow"
    elif compression in _TIFFFILE_CODECS and predictor in (1, 2) and photometric != 6 and bits not in (2, 4):
        header.decoder, header.invert = "tifffile", photometric == 0
        header.bits = bits if photometric in (0, 1) else 8
    elif bits <= 8 and not (extra and extra_codes[:1] == (0,)) and not (header.grey and extra and not extra_codes):
        header.decoder = "pillow"  # its modes: 1, L, LA, La, P, PA, RGB, RGBA, RGBa; it inverts MinIsWhite
    elif (bits == 16 and planar == 1 and not (header.grey and header.alpha)) or (bits == 8 and not header.grey):
        header.decoder, header.invert = "opencv", photometric == 0 and bits == 16  # libtiff inverts 8 bits only
    else:
        raise ImageError(f"{path}: a {what} TIFF with {how} compression cannot be read here: save it uncompressed "
                         "or Deflate-compressed, or as PNG")  # fmt: skip
    return header


def _exif_tags(block: bytes | None) -> PILImage.Exif:
    exif = PILImage.Exif()
    if block:
        with contextlib.suppress(Exception):  # unreadable EXIF is dropped, as in _upright_exif
            exif.load(block)
    return exif


@contextlib.contextmanager
def _library_quiet() -> Iterator[None]:
    """Pillow's and tifffile's warnings (e.g. "Corrupt EXIF data", a TIFF tag of an unexpected type) kept off
    the terminal: their loggers are silenced and Python warnings ignored while the block runs."""
    with _LIBRARY_STATE_LOCK:
        loggers = [logging.getLogger("PIL"), logging.getLogger("tifffile")]
        levels = [log.level for log in loggers]
        for log in loggers:
            log.setLevel(logging.CRITICAL + 1)  # their modules' loggers inherit it: "More samples per pixel than ..."
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            for log, level in zip(loggers, levels):
                log.setLevel(level)


@contextlib.contextmanager
def _pillow_quiet() -> Iterator[None]:
    """Pillow's own decompression-bomb guard (a warning above 89 megapixels, an error above 179) would
    pre-empt ours, which names the size and the flag, and its 1 MiB limit on a PNG's compressed chunks
    refuses valid files with large ICC profiles: both lifted (to _MAX_ZCHUNK for the chunks) only while a
    header is read, one reader at a time (Pillow keeps them as module state)."""
    with _library_quiet():
        saved = PILImage.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK
        PILImage.MAX_IMAGE_PIXELS = None
        PngImagePlugin.MAX_TEXT_CHUNK = max(saved[1], _MAX_ZCHUNK)
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK = saved


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


# ------------------------------------------------------------------------------------------ decoding


def _decode(path: Path, header: _Header) -> tuple[np.ndarray, bool, bool]:
    """The samples as the header's decoder gives them, interleaved; whether their colour is in BGR order
    (OpenCV's) rather than RGB; whether the decoder has applied the orientation already (OpenCV and Pillow
    turn TIFFs themselves)."""
    if header.decoder == "tifffile":
        return _decode_tifffile(path), False, False
    if header.decoder == "pillow":
        samples, oriented = _decode_pillow(path)
        return samples, False, oriented
    return _decode_opencv(path, header.drop), True, _is_tiff(path)


def _decode_opencv(path: Path, drop: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """OpenCV's BGR(A) pixels. Decoded from the file's bytes, never by path: a file name that is not valid
    UTF-8 (bytes smuggled in as lone surrogates) crashes OpenCV's path handling. The byte ranges in `drop`
    (large ancillary PNG chunks) are left out."""
    data = np.fromfile(path, np.uint8)
    if drop:
        keep = np.ones(data.size, bool)
        for offset, length in drop:
            keep[offset : offset + length] = False
        data = data[keep]
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


def _decode_tifffile(path: Path) -> np.ndarray:
    """A TIFF's samples as stored (tifffile: every planar configuration, tiles, predictor, 1/2/4 bits
    unpacked), samples last; a palette looked up in its ColorMap's high bytes (TIFF 6.0 section 5)."""
    try:
        with _library_quiet(), tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            samples = page.asarray()
            axes = page.axes
            colormap = page.colormap if page.photometric == 3 else None
    except (zlib.error, lzma.LZMAError, EOFError) as exc:
        raise ImageError(f"{path}: corrupt or truncated: {first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - tifffile decoding untrusted bytes raises many types
        raise ImageError(f"{path}: cannot decode ({type(exc).__name__}: {first_line(exc)})") from None
    if "S" in axes and axes.index("S") == 0 and samples.ndim == 3:
        samples = np.moveaxis(samples, 0, -1)
    samples = samples.astype(np.uint8) if samples.dtype == bool else samples
    samples = np.ascontiguousarray(samples, samples.dtype.newbyteorder("="))
    if colormap is not None:
        table = (np.asarray(colormap, np.uint16) >> 8).astype(np.uint8)  # 3 x 2^bits
        samples = np.ascontiguousarray(np.moveaxis(table[:, samples], 0, -1))
    return samples


# Pillow's modes for the TIFFs it reads: what to convert to (None: taken as they are, premultiplied La and RGBa
# included, which _conform divides out).
_PILLOW_MODES = {"1": "L", "P": "RGB", "PA": "RGBA", "YCbCr": "RGB",
                 "L": None, "LA": None, "La": None, "RGB": None, "RGBA": None, "RGBa": None}  # fmt: skip


def _decode_pillow(path: Path) -> tuple[np.ndarray, bool]:
    """An 8-bit (or 1/2/4-bit) TIFF in a compression tifffile lacks (LZW, JPEG, CCITT), by Pillow through
    libtiff: its modes keep the stored samples (La and RGBa: associated alpha, still premultiplied), invert
    MinIsWhite and scale 1-bit to 0/255. libtiff reports damage on stderr: captured and read, and truncated
    data is an error (LOAD_TRUNCATED_IMAGES stays off). Pillow (10 and later) turns a TIFF by its
    Orientation while loading and then removes the tag: where the tag is still there, it did not."""
    with _stderr_captured() as printed:
        try:
            with _pillow_quiet(), PILImage.open(path) as im:
                im.load()
                if im.mode not in _PILLOW_MODES:
                    raise ImageError(f"{path}: cannot decode (Pillow reads it as mode {im.mode})")
                target = _PILLOW_MODES[im.mode]
                samples = np.asarray(im.convert(target) if target else im)
                oriented = _ORIENTATION not in getattr(im, "tag_v2", {})
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - as in _pillow_header
            error = exc
        else:
            error = None
    damage = _damage(printed[0])
    if damage is not None:
        raise ImageError(f"{path}: corrupt or truncated: {damage}")
    if isinstance(error, PILImage.UnidentifiedImageError):  # a layout Pillow does not know, not damage
        raise ImageError(f"{path}: cannot decode (Pillow: {first_line(error)})")
    if error is not None:
        raise ImageError(f"{path}: corrupt or truncated: {first_line(error)}")
    return samples, oriented


def _conform(path: Path, samples: np.ndarray, bgr: bool, header: _Header) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour, alpha) in the layout the header decided, from the decoder's interleaved samples: grey from
    a decoder's R = G = B, alpha from a PNG colour key, no alpha where the header says the 4th sample is
    not transparency (BMP without an alpha mask, a palette whose tRNS is all opaque), MinIsWhite inverted,
    1/2/4 bits scaled to 8, associated alpha divided out. A decoder that gives another layout is refused."""
    if samples.dtype not in (np.uint8, np.uint16):
        raise ImageError(
            f"{path}: {samples.dtype} samples are not supported (8- or 16-bit unsigned integer images only)"
        )
    if samples.ndim not in (2, 3) or samples.shape[:2] != (header.height, header.width):
        given = "x".join(str(n) for n in samples.shape[1::-1]) if samples.ndim >= 2 else f"shape {samples.shape}"
        raise ImageError(
            f"{path}: the decoder gives {given} pixels but the header says {header.width}x{header.height}; not read"
        )
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    planes = samples if samples.ndim == 3 else samples[..., None]
    decoded_alpha = planes[..., channels - 1] if channels in (2, 4) else None
    colour = planes[..., : 1 if channels <= 2 else 3]
    if header.grey:
        if colour.shape[2] == 3 and not (
            np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2])
        ):
            raise ImageError(f"{path}: the decoder gives colour, the header says greyscale; not read")
        colour = np.ascontiguousarray(planes[..., 0])
    elif colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    elif bgr:  # one conversion, straight from OpenCV's BGR(A) to RGB
        colour = cv2.cvtColor(samples, cv2.COLOR_BGRA2RGB if channels == 4 else cv2.COLOR_BGR2RGB)
    else:
        colour = np.ascontiguousarray(colour)
    if header.invert:  # TIFF 6.0 PhotometricInterpretation 0: 0 is white
        colour = ((1 << header.bits) - 1 if header.bits < 8 else np.iinfo(colour.dtype).max) - colour
    if header.bits < 8:
        colour = (colour * (255 // ((1 << header.bits) - 1))).astype(np.uint8)
    depth = 8 * colour.dtype.itemsize
    if depth != header.depth:
        raise ImageError(f"{path}: the decoder gives {depth}-bit samples, the header says {header.depth}; not read")
    top = np.iinfo(colour.dtype).max
    alpha = None
    if header.key is not None:  # PNG tRNS colour key: exactly that grey or RGB is transparent
        match = colour == header.key[0] if header.grey else np.all(colour == np.array(header.key, colour.dtype), axis=2)
        alpha = np.where(match, 0, top).astype(colour.dtype)
    elif header.alpha:
        if decoded_alpha is None:
            raise ImageError(f"{path}: the decoder gives no alpha, the header says there is; not read")
        alpha = np.ascontiguousarray(decoded_alpha)
        if header.associated:
            colour = _unpremultiplied(colour, alpha)
    return colour, alpha


def _unpremultiplied(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight colour from associated alpha (TIFF 6.0 ExtraSamples 1: colour x alpha / max is stored):
    stored x max / alpha, rounded, at most max; 0 where alpha is 0 (nothing is recorded there). In bands
    of rows, so that the 64-bit products stay small."""
    top = int(np.iinfo(colour.dtype).max)
    out = np.empty_like(colour)
    step = max(1, (1 << 20) // max(1, colour[0].size))
    for start in range(0, colour.shape[0], step):
        a = alpha[start : start + step].astype(np.uint64)
        a = a[..., None] if colour.ndim == 3 else a
        straight = (colour[start : start + step].astype(np.uint64) * top + a // 2) // np.maximum(a, 1)
        out[start : start + step] = np.where(a > 0, np.minimum(straight, top), 0)
    return out


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


# ------------------------------------------------------------------------------------------ encoding


class _EncodeError(Exception):
    """OpenCV declined to encode; the message is what it printed, or that it said nothing."""


def _encode(tmp: Path, suffix: str, image: Image) -> None:
    """Write `image` to `tmp` in the format `suffix` names."""
    if suffix in _TIFF:
        _write_tiff(tmp, image)
        return
    if suffix == ".png":
        with open(tmp, "wb") as stream:
            write_png(stream, _interleaved(image, rgb=True), icc=image.icc, exif=_marked_exif(image.exif, mark(image.outscale)))
        return
    jpeg, webp = image.encoding.jpeg_quality, image.encoding.webp_quality
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, jpeg], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, jpeg]}
    params[".webp"] = [cv2.IMWRITE_WEBP_QUALITY, 101 if webp is None else webp]  # above 100: lossless
    if image.alpha is not None and webp is None:  # libwebp's exact mode: keep the colour of transparent pixels
        params[".webp"] += [cv2.IMWRITE_WEBP_LOSSLESS_MODE, cv2.IMWRITE_WEBP_LOSSLESS_PRESERVE_COLOR]
    # OpenCV writes an ICC profile into one APP2 marker only: a larger one is split here (_with_icc_markers).
    split_icc = suffix in _JPEG and image.icc is not None and len(image.icc) > _ICC_PER_APP2
    kinds, blocks = [], []
    if suffix != ".bmp":
        icc = None if split_icc else image.icc
        for kind, block in ((cv2.IMAGE_METADATA_ICCP, icc), (cv2.IMAGE_METADATA_EXIF, _marked_exif(image.exif, mark(image.outscale)))):
            if block:
                kinds.append(kind)
                blocks.append(np.frombuffer(block, np.uint8))
    data = _interleaved(image, rgb=False)
    with _stderr_captured() as printed:
        ok, encoded = cv2.imencodeWithMetadata(suffix, data, kinds, blocks, params.get(suffix, []))
    if not ok:
        raise _EncodeError(_damage(printed[0]) or "OpenCV gives no reason")
    content = encoded.tobytes()
    if split_icc:
        content = _with_icc_markers(content, image.icc)
    elif suffix == ".bmp" and image.icc:
        content = _bmp_with_profile(content, image.icc)
    tmp.write_bytes(content)  # by Python, not by path in C: see _decode_opencv


def _with_icc_markers(jpeg: bytes, icc: bytes) -> bytes:
    """The JPEG with `icc` in APP2 markers of at most 65,519 profile bytes, each "ICC_PROFILE\\0", its
    sequence number (from 1) and the count (ICC.1 Annex B.4), after the APP0/APP1 markers that start it."""
    at = 2
    while jpeg[at] == 0xFF and jpeg[at + 1] in (0xE0, 0xE1):
        at += 2 + struct.unpack_from(">H", jpeg, at + 2)[0]
    parts = [icc[i : i + _ICC_PER_APP2] for i in range(0, len(icc), _ICC_PER_APP2)]
    markers = b"".join(
        b"\xff\xe2" + struct.pack(">H", 2 + 14 + len(part)) + b"ICC_PROFILE\x00" + bytes([n, len(parts)]) + part
        for n, part in enumerate(parts, 1)
    )
    return jpeg[:at] + markers + jpeg[at:]


def _bmp_with_profile(bmp: bytes, icc: bytes) -> bytes:
    """OpenCV's BMP (BITMAPINFOHEADER) with a BITMAPV5HEADER that embeds `icc`: the first 40 bytes kept,
    masks 0 (BI_RGB), bV5CSType PROFILE_EMBEDDED, intent LCS_GM_IMAGES, the profile after the pixels
    (bV5ProfileData counts from the header's start)."""
    info_size, offset = struct.unpack_from("<I", bmp, 14)[0], struct.unpack_from("<I", bmp, 10)[0]
    if info_size != 40:
        raise _EncodeError(f"OpenCV wrote a BMP header of {info_size} bytes, where 40 were expected")
    grown = 124 - 40
    body = bmp[54:]
    profile_at = 14 + 124 + len(body)  # from the file's start
    v5 = (
        bmp[14:54].replace(struct.pack("<I", 40), struct.pack("<I", 124), 1)
        + bytes(16)  # red, green, blue, alpha masks: unused with BI_RGB
        + b"DEBM"  # bV5CSType 'MBED' (PROFILE_EMBEDDED) as a little-endian DWORD
        + bytes(36 + 12)  # endpoints and gamma: unused with an embedded profile
        + struct.pack("<IIII", 4, profile_at - 14, len(icc), 0)  # LCS_GM_IMAGES, profile data, size, reserved
    )
    head = b"BM" + struct.pack("<IHHI", profile_at + len(icc), 0, 0, offset + grown)
    return head + v5 + body + icc


def _interleaved(image: Image, rgb: bool) -> np.ndarray:
    """Colour and alpha as one contiguous array: grey, grey+alpha (PNG only: OpenCV has no such layout and
    gets BGRA), RGB or RGBA when `rgb`, else OpenCV's BGR and BGRA."""
    colour = image.colour if image.is_grey or rgb else image.colour[..., ::-1]
    if image.alpha is None:
        return np.ascontiguousarray(colour)
    if image.is_grey and not rgb:
        colour = np.repeat(colour[..., None], 3, axis=2)
    return np.dstack([colour, image.alpha])


def _marked_exif(block: bytes | None, software: str = SOFTWARE) -> bytes:
    """The image's EXIF (TIFF-structured) with the Software tag set to `software` (this tool's mark), or a
    new block with only it."""
    exif = _exif_tags(block)
    exif[_SOFTWARE_TAG] = software
    return exif.tobytes().removeprefix(b"Exif\x00\x00")


def _write_tiff(tmp: Path, image: Image) -> None:
    """TIFF with the ICC profile (tag 34675); grey+alpha is written as RGBA (R = G = B), as it always was."""
    if image.alpha is None:
        data, photometric, extra = image.colour, ("minisblack" if image.is_grey else "rgb"), None
    else:
        rgb = np.repeat(image.colour[..., None], 3, axis=2) if image.is_grey else image.colour
        data, photometric, extra = np.dstack([rgb, image.alpha]), "rgb", ["unassalpha"]
    # Deflate level 1 with the horizontal predictor: as small as OpenCV's LZW TIFFs and as fast to write.
    tifffile.imwrite(
        tmp, data, photometric=photometric, extrasamples=extra, iccprofile=image.icc, software=mark(image.outscale),
        compression="zlib", compressionargs={"level": 1}, predictor=True,
    )  # fmt: skip
