"""Every encoding an input may come in, as a generated matrix, through read_image and write_image into
every output format.

Sources are made here from a real photo (scikit-image's astronaut, 24x20), by a tiny PNG writer of this
file (every colour type and bit depth of the PNG specification, third edition, 11.2.1 IHDR, with and
without tRNS, 11.3.2.1, and interlaced, 8.2 Adam7), a tiny TIFF writer (TIFF 6.0: any BitsPerSample,
SampleFormat, Photometric, ExtraSamples, PlanarConfiguration; uncompressed or LZW, section 13), tifffile
(Deflate, tiles, separate planes, big-endian, BigTIFF), Pillow (LZW, PackBits, JPEG and CCITT G4 TIFFs,
palette+alpha TIFF, JPEG, WebP, BMP) and OpenCV (its own RGBA TIFF and BMP). Each
source says what read_image must give (`Expect`: the samples decoded by the specification, not by the
code under test) or how it must be refused (one line naming the cause, from the header, before any pixel
is decoded).

For every readable source and every output format: read_image, then write_image of a stand-in x4 result
of the same layout (nearest-neighbour repeat of colour and alpha, the metadata carried), read back, and
compared: lossless formats (PNG, WebP lossless, TIFF, BMP) exactly; JPEG by a PSNR floor. Kept: grey or
colour (WebP has no greyscale: grey comes back as R = G = B), alpha present iff the source had
transparency (tRNS included), the bit depth, the ICC profile byte for byte (checked by an independent
parser of each format), this tool's mark. Where an output format cannot keep the image, write_image
refuses it with the message `output_problem` gives from the source's header alone.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image as PILImage
from PIL import ImageCms, PngImagePlugin

from runtime.images import io as imageio
from runtime.images.io import SOFTWARE, Image, ImageError, read_image, write_image

OUTPUTS = (".png", ".jpg", ".webp", ".tif", ".bmp")
LOSSLESS = {".png", ".webp", ".tif", ".bmp"}
# JPEG at quality 95 with 4:2:0 chroma (OpenCV's defaults) on a nearest-neighbour x4 of these sources
# measures 43-48 dB on the photo and 31.7 dB on Pillow's dithered web palette (its sharpest colour edges);
# 30 dB still fails a swapped channel or a premultiplied colour (under 20 dB on this photo).
JPEG_OUT_PSNR = 30.0
H, W = 20, 24
SCALE = 4


# ------------------------------------------------------------------------------------------ photo data


def _crop(photo: np.ndarray, top: int, left: int) -> np.ndarray:
    return np.ascontiguousarray(photo[top : top + H, left : left + W])


RGB8 = _crop(skimage.data.astronaut(), 40, 200)  # face and hair: edges, skin, dark areas
TEXTURE = _crop(skimage.data.coffee(), 150, 250)
GREY8 = (RGB8.astype(np.uint16).sum(axis=2) // 3).astype(np.uint8)
# 16 bits that use the low byte: the photo in the high byte, another photo in the low one.
RGB16 = RGB8.astype(np.uint16) * 256 + TEXTURE
GREY16 = GREY8.astype(np.uint16) * 256 + TEXTURE[..., 1]
_y, _x = np.mgrid[:H, :W]
_FADE = np.clip(1.4 - np.hypot((_y - H / 2) / H, (_x - W / 2) / W) * 2.2, 0, 1)  # opaque centre, clear corners
ALPHA8 = np.round(_FADE * (0.7 + 0.3 * TEXTURE[..., 0] / 255) * 255).astype(np.uint8)
ALPHA16 = np.round(_FADE * (0.7 + 0.3 * TEXTURE[..., 0] / 255) * 65535).astype(np.uint16)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def icc_profile(extra: int, space: bytes = b"RGB ") -> bytes:
    """sRGB's profile grown by `extra` incompressible bytes after its tags (the header's size field says so),
    its data colour space (ICC.1 7.2.6, bytes 16-19) set to `space`."""
    data = bytearray(SRGB) + np.random.default_rng(extra).integers(0, 256, extra, dtype=np.uint8).tobytes()
    data[0:4] = struct.pack(">I", len(data))
    data[16:20] = space
    return bytes(data)


# --------------------------------------------------------------------------------------- expectations


@dataclass
class Expect:
    """What read_image must return: `colour` (H x W grey or H x W x 3 RGB) and `alpha` exactly, or within
    `psnr` dB of them for a lossy source; `icc` byte for byte."""

    colour: np.ndarray
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    psnr: float | None = None


@dataclass(frozen=True)
class Source:
    """One input: its file name suffix and a maker of (file bytes, Expect or the refusal's regex)."""

    name: str
    suffix: str
    make: Callable[[], tuple[bytes, Expect | str]]


def _cached(make: Callable[[], tuple[bytes, Expect | str]]) -> Callable[[], tuple[bytes, Expect | str]]:
    return functools.lru_cache(maxsize=None)(make)


# -------------------------------------------------------------------------------------- a PNG writer


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _pack_rows(samples: np.ndarray, depth: int) -> list[bytes]:
    """Rows of samples as PNG and TIFF store them: big-endian 16-bit, or 1/2/4-bit packed from the most
    significant bit, each row padded to a whole byte (PNG 7.2, TIFF 6.0 section 2 BitsPerSample)."""
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in samples.reshape(samples.shape[0], -1)]
    if depth == 8:
        return [row.tobytes() for row in samples.reshape(samples.shape[0], -1)]
    per_byte = 8 // depth
    rows = []
    for row in samples.reshape(samples.shape[0], -1).astype(np.uint16):
        padded = np.zeros(-(-row.size // per_byte) * per_byte, np.uint16)
        padded[: row.size] = row
        groups = padded.reshape(-1, per_byte)
        shifts = np.arange(per_byte - 1, -1, -1) * depth
        rows.append((groups << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_bytes(samples: np.ndarray, depth: int, colour_type: int, *, plte: bytes | None = None,
              trns: bytes | None = None, icc: bytes | None = None, interlace: bool = False) -> bytes:  # fmt: skip
    """A PNG of any colour type and depth, filter type 0 (None) on every row, one IDAT."""
    height, width = samples.shape[:2]
    if interlace:  # PNG 8.2: seven passes, each its own reduced image; empty passes are left out
        parts = [samples[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7]
        raw = b"".join(b"\x00" + row for part in parts if part.size for row in _pack_rows(part, depth))
    else:
        raw = b"".join(b"\x00" + row for row in _pack_rows(samples, depth))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlace))
    )
    if icc is not None:
        out += _chunk(b"iCCP", b"photo profile\x00\x00" + zlib.compress(icc))
    if plte is not None:
        out += _chunk(b"PLTE", plte)
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _scale(samples: np.ndarray, depth: int) -> np.ndarray:
    """1/2/4-bit samples as 8-bit: v * 255 / (2^depth - 1), exact (PNG 12.4, the bit replication libpng does)."""
    return (samples.astype(np.uint16) * (255 // (2**depth - 1))).astype(np.uint8)


def _keyed(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`samples` with a block set to the value (grey) or colour of one pixel, and that value: a tRNS colour
    key (PNG 11.3.2.1) that matches the block and wherever the photo has it."""
    samples = samples.copy()
    key = samples[12, 14].copy()
    samples[:5, :6] = key
    return samples, key


def _png_source(colour_type: int, depth: int, transparency: str, interlace: bool = False) -> Source:
    """`transparency`: "none", "trns" (a colour key or palette alpha), "trns-opaque" (a palette tRNS whose
    entries are all 255: no pixel can be transparent, so no alpha), "trns-wide" (a grey key with bits above
    the depth set, which decoders mask off, PNG 11.3.2.1)."""
    top = 65535 if depth == 16 else 255

    def make() -> tuple[bytes, Expect]:
        trns, alpha = None, None
        if colour_type in (0, 4):
            samples = GREY16 if depth == 16 else (GREY8 >> (8 - depth) if depth < 8 else GREY8)
            colour = samples if depth >= 8 else _scale(samples, depth)
            if transparency != "none":
                samples, key = _keyed(samples)
                colour = samples if depth >= 8 else _scale(samples, depth)
                wide = (1 << depth) if transparency == "trns-wide" and depth < 16 else 0
                trns = struct.pack(">H", int(key) | wide)
                alpha = np.where(samples == key, 0, top).astype(colour.dtype)
            if colour_type == 4:
                alpha = ALPHA16 if depth == 16 else ALPHA8
                samples = np.dstack([samples, alpha])
            return png_bytes(samples, depth, colour_type, trns=trns, interlace=interlace), Expect(colour, alpha)
        if colour_type in (2, 6):
            samples = RGB16 if depth == 16 else RGB8
            if transparency != "none":
                samples, key = _keyed(samples)
                trns = struct.pack(">HHH", *(int(v) for v in key))
                alpha = np.where(np.all(samples == key, axis=2), 0, top).astype(samples.dtype)
            colour = samples
            if colour_type == 6:
                alpha = ALPHA16 if depth == 16 else ALPHA8
                samples = np.dstack([samples, alpha])
            return png_bytes(samples, depth, colour_type, trns=trns, interlace=interlace), Expect(colour, alpha)
        # Palette (colour type 3): the photo quantised to 2^depth colours by Pillow.
        quantised = PILImage.fromarray(RGB8).quantize(colors=2**depth, method=PILImage.Quantize.MEDIANCUT)
        indices = np.asarray(quantised).astype(np.intp)
        used = max(int(indices.max()) + 1, 2)
        palette = np.array(quantised.getpalette()[: 3 * used], np.uint8).reshape(-1, 3)
        colour = palette[indices]
        if transparency == "trns":
            # Fewer entries than the palette (PNG 11.3.2.1: the rest are opaque); graded, so alpha is soft.
            table = np.full(used, 255, np.uint8)
            count = max(1, used // 2)
            table[:count] = np.round(np.linspace(0, 200, count)).astype(np.uint8)
            trns, alpha = table[:count].tobytes(), table[indices]
        elif transparency == "trns-opaque":
            trns = bytes([255] * used)
        data = png_bytes(indices.astype(np.uint8), depth, 3, plte=palette.tobytes(), trns=trns, interlace=interlace)
        return data, Expect(colour, alpha)

    name = f"png-type{colour_type}-{depth}bit-{transparency}" + ("-adam7" if interlace else "")
    return Source(name, ".png", _cached(make))


def _png_with_chunk(kind: bytes, body: bytes) -> tuple[bytes, Expect]:
    """RGB8 with one more chunk before IDAT: large ancillary chunks are valid (PNG 5.4), whatever a
    decoder's default limits say."""
    data = png_bytes(RGB8, 8, 2)
    at = data.index(b"IDAT") - 4
    return data[:at] + _chunk(kind, body) + data[at:], Expect(RGB8)


PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
PNG_SOURCES = [
    _png_source(colour_type, depth, transparency)
    for colour_type, depths in PNG_DEPTHS.items()
    for depth in depths
    for transparency in (("none", "trns") if colour_type in (0, 2, 3) else ("none",))
] + [
    _png_source(3, 8, "trns-opaque"),
    _png_source(0, 4, "trns-wide"),
    _png_source(0, 8, "trns-wide"),
    _png_source(0, 2, "trns", interlace=True),
    _png_source(2, 16, "trns", interlace=True),
    _png_source(3, 4, "trns", interlace=True),
    _png_source(4, 8, "none", interlace=True),
    _png_source(6, 16, "none", interlace=True),
    # 2 MB of XMP in a compressed text chunk (Pillow's default limit: 1 MiB); a 9 MB private chunk (OpenCV's
    # PNG reader refuses any chunk before IDAT over 7,999,988 bytes).
    Source(
        "png-ztxt-2mb",
        ".png",
        _cached(lambda: _png_with_chunk(b"zTXt", b"XML:com.adobe.xmp\x00\x00" + zlib.compress(b" " * 2_000_000))),
    ),
    Source("png-private-chunk-9mb", ".png", _cached(lambda: _png_with_chunk(b"prVt", bytes(9_000_000)))),
]


# ------------------------------------------------------------------------------------- a TIFF writer


def lzw_encode(data: bytes) -> bytes:
    """TIFF 6.0 section 13 LZW, as libtiff writes it: codes of 9 to 12 bits, most significant bit first;
    Clear (256) first and when the table reaches 4094 entries, EndOfInformation (257) last; the width grows
    once the next free code no longer fits. (tifffile writes LZW only with imagecodecs.)"""
    out, bits, count = bytearray(), 0, 0

    def emit(code: int, width: int) -> None:
        nonlocal bits, count
        bits, count = (bits << width) | code, count + width
        while count >= 8:
            count -= 8
            out.append((bits >> count) & 0xFF)
        bits &= (1 << count) - 1

    table = {bytes([i]): i for i in range(256)}
    next_code, width, word = 258, 9, b""
    emit(256, width)
    for byte in data:
        grown = word + bytes([byte])
        if grown in table:
            word = grown
            continue
        emit(table[word], width)
        table[grown] = next_code
        next_code += 1
        if next_code == 4094:
            emit(256, width)
            table, next_code, width = {bytes([i]): i for i in range(256)}, 258, 9
        elif next_code > (1 << width) - 1:
            width += 1
        word = bytes([byte])
    if word:
        emit(table[word], width)
    emit(257, width)
    if count:
        out.append((bits << (8 - count)) & 0xFF)
    return bytes(out)


def tiff_bytes(samples: np.ndarray, bits: int, photometric: int, *, sample_format: int = 1,
               extra: tuple[int, ...] | None = (), colormap: np.ndarray | None = None,
               icc: bytes | None = None, lzw: bool = False, planar: bool = False) -> bytes:  # fmt: skip
    """A little-endian TIFF (TIFF 6.0) of one strip per plane: H x W or H x W x S `samples` stored with
    `bits` per sample, uncompressed or LZW, interleaved or in separate planes (PlanarConfiguration 2);
    `extra` the ExtraSamples values (None: no tag even with extra samples)."""
    height, width = samples.shape[:2]
    spp = 1 if samples.ndim == 2 else samples.shape[2]
    if planar:
        strips = [tiff_bytes(samples[..., s], bits, 1, sample_format=sample_format) for s in range(spp)]
        strips = [t[-height * width * bits // 8 :] for t in strips]
    elif bits in (8, 16, 32, 64) or samples.dtype.kind == "f":
        strips = [np.ascontiguousarray(samples.astype(samples.dtype.newbyteorder("<"))).tobytes()]
    elif bits < 8:
        strips = [b"".join(_pack_rows(samples, bits))]
    else:  # 12-bit and the like: big-endian bit packing, each row padded to a byte (TIFF 6.0 section 2)
        bitstring = "".join(format(int(v), f"0{bits}b") for v in samples.reshape(-1))
        row_bits = width * spp * bits
        rows = [bitstring[r * row_bits : (r + 1) * row_bits] for r in range(height)]
        strips = [b"".join(int(r.ljust(-(-len(r) // 8) * 8, "0"), 2).to_bytes(-(-len(r) // 8), "big") for r in rows)]
    if lzw:
        strips = [lzw_encode(strip) for strip in strips]
    strip = b"".join(strips)
    entries: list[tuple[int, int, list[int] | bytes]] = [
        (256, 4, [width]), (257, 4, [height]), (258, 3, [bits] * spp), (259, 3, [5 if lzw else 1]),
        (262, 3, [photometric]), (273, 4, [0] * len(strips)), (277, 3, [spp]), (278, 4, [height]),
        (279, 4, [len(s) for s in strips]), (284, 3, [2 if planar else 1]), (339, 3, [sample_format] * spp),
    ]  # fmt: skip
    if extra:
        entries.append((338, 3, list(extra)))
    if colormap is not None:
        entries.append((320, 3, [int(v) for v in colormap.reshape(-1)]))
    if icc is not None:
        entries.append((34675, 7, icc))
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_size
    blobs = b""
    fields = b""
    strip_at_field = None
    offsets_blob_at = None
    for tag, kind, values in entries:
        payload = (
            values if isinstance(values, bytes) else struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
        )
        count = len(values)
        if len(payload) <= 4:
            fields += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\x00")
            if tag == 273:
                strip_at_field = len(fields) - 4
        else:
            fields += struct.pack("<HHII", tag, kind, count, data_at + len(blobs))
            if tag == 273:
                offsets_blob_at = len(blobs)
            blobs += payload + b"\x00" * (len(payload) % 2)
    strip_at = data_at + len(blobs)
    starts = [strip_at + sum(len(t) for t in strips[:i]) for i in range(len(strips))]
    if offsets_blob_at is None:
        fields = fields[:strip_at_field] + struct.pack("<I", starts[0]) + fields[strip_at_field + 4 :]
    else:
        blobs = (
            blobs[:offsets_blob_at]
            + struct.pack(f"<{len(starts)}I", *starts)
            + blobs[offsets_blob_at + 4 * len(starts) :]
        )
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + fields + b"\x00" * 4 + blobs + strip


def _tifffile(data: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, **kwargs)
    return buffer.getvalue()


def _pillow(array: np.ndarray, mode: str, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).convert(mode).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def premultiplied(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour multiplied by alpha / max, rounded: TIFF 6.0 ExtraSamples 1, associated alpha."""
    top = np.iinfo(colour.dtype).max
    a = alpha.astype(np.uint64)[..., None] if colour.ndim == 3 else alpha.astype(np.uint64)
    return ((colour.astype(np.uint64) * a + top // 2) // top).astype(colour.dtype)


def unpremultiplied(stored: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The straight colour of associated-alpha samples: stored x max / alpha, rounded, at most max; 0 where
    alpha is 0 (no colour is recorded there)."""
    top = np.iinfo(stored.dtype).max
    a = alpha.astype(np.uint64)[..., None] if stored.ndim == 3 else alpha.astype(np.uint64)
    straight = (stored.astype(np.uint64) * top + a // 2) // np.maximum(a, 1)
    return np.where(a > 0, np.minimum(straight, top), 0).astype(stored.dtype)


def _tiff_alpha(grey: bool, depth: int, extra: int | None, how: str = "tifffile") -> Source:
    """RGB(A) or grey(+alpha) with one extra sample marked `extra` (None: no ExtraSamples tag), 8 or 16 bits."""

    def make() -> tuple[bytes, Expect]:
        colour = (GREY16 if grey else RGB16) if depth == 16 else (GREY8 if grey else RGB8)
        alpha = ALPHA16 if depth == 16 else ALPHA8
        stored = premultiplied(colour, alpha) if extra == 1 else colour
        samples = np.dstack([stored, alpha])
        if how == "tifffile":
            data = _tifffile(samples, photometric="minisblack" if grey else "rgb", extrasamples=[extra])
        elif how == "separate":
            data = _tifffile(np.moveaxis(samples, 2, 0), photometric="minisblack" if grey else "rgb",
                             planarconfig="separate", extrasamples=[extra])  # fmt: skip
        elif how == "tiles":
            data = _tifffile(samples, photometric="minisblack" if grey else "rgb", extrasamples=[extra], tile=(16, 16),
                             compression="zlib")  # fmt: skip
        elif how == "opencv":  # OpenCV's own RGBA TIFF: LZW, no ExtraSamples tag
            ok, encoded = cv2.imencode(".tiff", cv2.cvtColor(samples, cv2.COLOR_RGBA2BGRA))
            assert ok
            data = encoded.tobytes()
        else:
            data = tiff_bytes(samples, depth, 1 if grey else 2, extra=None if extra is None else (extra,))
        expected = unpremultiplied(stored, alpha) if extra == 1 else colour
        return data, Expect(expected, alpha)

    label = {None: "none", 0: "unspecified", 1: "associated", 2: "unassociated"}[extra]
    return Source(f"tiff-{'grey' if grey else 'rgb'}a{depth}-extra-{label}-{how}", ".tif", _cached(make))


def _tiff_plain(name: str, make: Callable[[], tuple[bytes, Expect | str]]) -> Source:
    return Source(f"tiff-{name}", ".tif", _cached(make))


_PALETTE16 = (np.arange(256)[None, :] * np.array([[257], [97], [31]]) % 65536).astype(np.uint16)  # 16-bit colormap


_FLIPS = {
    2: lambda a: np.ascontiguousarray(a[:, ::-1]),
    3: lambda a: np.ascontiguousarray(a[::-1, ::-1]),
    4: lambda a: np.ascontiguousarray(a[::-1]),
}


def _tiff_palette() -> tuple[bytes, Expect]:
    """Photometric 3: 8-bit indices, a 16-bit colormap (TIFF 6.0 section 5); colours read as its high bytes."""
    colormap = (_PALETTE16 // 257 * 257).astype(np.uint16)  # 8-bit colours x 257: the high byte is exact
    return tiff_bytes(GREY8, 8, 3, colormap=colormap), Expect(
        np.stack([c[GREY8] // 257 for c in colormap], axis=2).astype(np.uint8)
    )


def _refusal(
    samples: np.ndarray, bits: int, photometric: int, sample_format: int, pattern: str, **kw
) -> Callable[[], tuple[bytes, str]]:
    return lambda: (tiff_bytes(samples, bits, photometric, sample_format=sample_format, **kw), pattern)


TIFF_SOURCES = [
    _tiff_plain("grey8", lambda: (_tifffile(GREY8, photometric="minisblack"), Expect(GREY8))),
    _tiff_plain(
        "grey16-deflate", lambda: (_tifffile(GREY16, photometric="minisblack", compression="zlib"), Expect(GREY16))
    ),
    _tiff_plain("rgb8", lambda: (_tifffile(RGB8, photometric="rgb"), Expect(RGB8))),
    _tiff_plain("rgb16", lambda: (_tifffile(RGB16, photometric="rgb"), Expect(RGB16))),
    _tiff_plain("rgb16-big-endian", lambda: (_tifffile(RGB16, photometric="rgb", byteorder=">"), Expect(RGB16))),
    _tiff_plain(
        "rgb8-tiles16-deflate-predictor",
        lambda: (_tifffile(RGB8, photometric="rgb", tile=(16, 16), compression="zlib", predictor=True), Expect(RGB8)),
    ),
    _tiff_plain("rgb16-tiles16", lambda: (_tifffile(RGB16, photometric="rgb", tile=(16, 16)), Expect(RGB16))),
    _tiff_plain(
        "rgb8-separate",
        lambda: (_tifffile(np.moveaxis(RGB8, 2, 0), photometric="rgb", planarconfig="separate"), Expect(RGB8)),
    ),
    _tiff_plain(
        "rgb16-separate",
        lambda: (_tifffile(np.moveaxis(RGB16, 2, 0), photometric="rgb", planarconfig="separate"), Expect(RGB16)),
    ),
    _tiff_plain("miniswhite8", lambda: (_tifffile(255 - GREY8, photometric="miniswhite"), Expect(GREY8))),
    _tiff_plain("miniswhite16", lambda: (_tifffile(65535 - GREY16, photometric="miniswhite"), Expect(GREY16))),
    _tiff_plain(
        "bilevel",
        lambda: (
            _tifffile(GREY8 > 100, photometric="minisblack"),
            Expect(np.where(GREY8 > 100, 255, 0).astype(np.uint8)),
        ),
    ),
    _tiff_plain(
        "bilevel-miniswhite",
        lambda: (
            _tifffile(GREY8 <= 100, photometric="miniswhite"),
            Expect(np.where(GREY8 > 100, 255, 0).astype(np.uint8)),
        ),
    ),
    _tiff_plain("grey4", lambda: (tiff_bytes(GREY8 >> 4, 4, 1), Expect(_scale(GREY8 >> 4, 4)))),
    _tiff_plain("grey2-miniswhite", lambda: (tiff_bytes(3 - (GREY8 >> 6), 2, 0), Expect(_scale(GREY8 >> 6, 2)))),
    _tiff_plain("palette8", _tiff_palette),
    _tiff_plain(
        "icc-100k",
        lambda: (
            _tifffile(RGB8, photometric="rgb", iccprofile=icc_profile(100_000)),
            Expect(RGB8, icc=icc_profile(100_000)),
        ),
    ),
    # Compressions tifffile cannot decode without imagecodecs: LZW (Pillow's, OpenCV's), PackBits, JPEG, CCITT G4.
    _tiff_plain("rgb8-lzw", lambda: (_pillow(RGB8, "RGB", "TIFF", compression="tiff_lzw"), Expect(RGB8))),
    _tiff_plain(
        "rgba8-lzw",
        lambda: (_pillow(np.dstack([RGB8, ALPHA8]), "RGBA", "TIFF", compression="tiff_lzw"), Expect(RGB8, ALPHA8)),
    ),
    _tiff_plain(
        "greya8-lzw",
        lambda: (_pillow(np.dstack([GREY8, ALPHA8]), "LA", "TIFF", compression="tiff_lzw"), Expect(GREY8, ALPHA8)),
    ),
    _tiff_plain("grey8-packbits", lambda: (_pillow(GREY8, "L", "TIFF", compression="packbits"), Expect(GREY8))),
    _tiff_plain(
        "palette8-lzw",
        lambda: (
            _pillow(RGB8, "P", "TIFF", compression="tiff_lzw"),
            Expect(np.asarray(PILImage.fromarray(RGB8).convert("P").convert("RGB"))),
        ),
    ),
    _tiff_plain(
        "rgb8-jpeg", lambda: (_pillow(RGB8, "RGB", "TIFF", compression="jpeg", quality=95), Expect(RGB8, psnr=30.0))
    ),
    _tiff_plain(
        "bilevel-group4",
        lambda: (
            _pillow((GREY8 > 100).astype(np.uint8) * 255, "1", "TIFF", compression="group4"),
            Expect(np.where(GREY8 > 100, 255, 0).astype(np.uint8)),
        ),
    ),
    _tiff_plain("rgb16-lzw-opencv", lambda: (cv2.imencode(".tiff", RGB16[..., ::-1])[1].tobytes(), Expect(RGB16))),
    # LZW, which tifffile cannot decode here: read by OpenCV (16 bits; 8-bit RGB with an unspecified extra
    # sample) or Pillow (8 bits), or refused where neither reads the layout as stored.
    _tiff_plain(
        "rgba8-extra-unspecified-lzw",
        lambda: (tiff_bytes(np.dstack([RGB8, ALPHA8]), 8, 2, extra=(0,), lzw=True), Expect(RGB8, ALPHA8)),
    ),
    _tiff_plain(
        "rgba16-extra-associated-lzw",
        lambda: (
            tiff_bytes(np.dstack([premultiplied(RGB16, ALPHA16), ALPHA16]), 16, 2, extra=(1,), lzw=True),
            Expect(unpremultiplied(premultiplied(RGB16, ALPHA16), ALPHA16), ALPHA16),
        ),
    ),
    _tiff_plain("miniswhite16-lzw", lambda: (tiff_bytes(65535 - GREY16, 16, 0, lzw=True), Expect(GREY16))),
    _tiff_plain("miniswhite8-lzw", lambda: (tiff_bytes(255 - GREY8, 8, 0, lzw=True), Expect(GREY8))),
    _tiff_plain("grey4-lzw", lambda: (tiff_bytes(GREY8 >> 4, 4, 1, lzw=True), Expect(_scale(GREY8 >> 4, 4)))),
    _tiff_plain("rgb8-separate-lzw", lambda: (tiff_bytes(RGB8, 8, 2, lzw=True, planar=True), Expect(RGB8))),
    _tiff_plain(
        "greya16-lzw",
        lambda: (
            tiff_bytes(np.dstack([GREY16, ALPHA16]), 16, 1, extra=(2,), lzw=True),
            r"grey\+alpha TIFF with LZW compression cannot be read here",
        ),
    ),
    _tiff_plain(
        "rgb16-separate-lzw",
        lambda: (tiff_bytes(RGB16, 16, 2, lzw=True, planar=True), r"RGB TIFF with LZW compression cannot be read here"),
    ),
    _tiff_plain(
        "greya8-extra-unspecified-lzw",
        lambda: (tiff_bytes(np.dstack([GREY8, ALPHA8]), 8, 1, extra=(0,), lzw=True), r"cannot be read here"),
    ),
    _tiff_plain(
        "palette-alpha8",
        lambda: (
            _pillow(np.dstack([RGB8, ALPHA8]), "PA", "TIFF"),
            Expect(np.asarray(PILImage.fromarray(np.dstack([RGB8, ALPHA8])).convert("PA").convert("RGB")), ALPHA8),
        ),
    ),
    _tiff_plain(
        "palette-alpha8-lzw",
        lambda: (
            _pillow(np.dstack([RGB8, ALPHA8]), "PA", "TIFF", compression="tiff_lzw"),
            Expect(np.asarray(PILImage.fromarray(np.dstack([RGB8, ALPHA8])).convert("PA").convert("RGB")), ALPHA8),
        ),
    ),
    _tiff_plain("grey16-lzw-pillow", lambda: (_pillow(GREY16, "I;16", "TIFF", compression="tiff_lzw"), Expect(GREY16))),
    _tiff_plain(
        "rgba16-bigtiff",
        lambda: (
            _tifffile(np.dstack([RGB16, ALPHA16]), photometric="rgb", extrasamples=[2], bigtiff=True),
            Expect(RGB16, ALPHA16),
        ),
    ),
    # Orientation 2-4 (TIFF 6.0 Orientation: mirrored, turned half, flipped) applied by every decoder's route.
    *(
        _tiff_plain(
            f"orientation{o}-deflate",
            lambda o=o: (
                _tifffile(RGB8, photometric="rgb", compression="zlib", extratags=[(274, 3, 1, o, True)]),
                Expect(_FLIPS[o](RGB8)),
            ),
        )
        for o in (2, 3, 4)
    ),
    *(
        _tiff_plain(
            f"orientation{o}-lzw",
            lambda o=o: (
                _pillow(RGB8, "RGB", "TIFF", compression="tiff_lzw", tiffinfo={274: o}),
                Expect(_FLIPS[o](RGB8)),
            ),
        )
        for o in (2, 3, 4)
    ),
    # Refused from the header with the cause named (TIFF 6.0 section 19: SampleFormat 2 signed, 3 IEEE float).
    _tiff_plain("float32", _refusal(GREY8.astype(np.float32) / 255, 32, 1, 3, r"32-bit floating-point samples")),
    _tiff_plain("float32-rgb", _refusal(RGB8.astype(np.float32) / 255, 32, 2, 3, r"32-bit floating-point samples")),
    _tiff_plain("float16", _refusal(GREY8.astype(np.float16) / 255, 16, 1, 3, r"16-bit floating-point samples")),
    _tiff_plain("float64-rgb", _refusal(RGB8.astype(np.float64) / 255, 64, 2, 3, r"64-bit floating-point samples")),
    _tiff_plain("int8", _refusal(GREY8.astype(np.int8), 8, 1, 2, r"8-bit signed integer samples")),
    _tiff_plain("int16", _refusal(GREY16.astype(np.int16), 16, 1, 2, r"16-bit signed integer samples")),
    _tiff_plain("int16-rgb", _refusal(RGB16.astype(np.int16), 16, 2, 2, r"16-bit signed integer samples")),
    _tiff_plain("int32", _refusal(GREY16.astype(np.int32), 32, 1, 2, r"32-bit signed integer samples")),
    _tiff_plain("uint32", _refusal(GREY16.astype(np.uint32) * 65536, 32, 1, 1, r"32-bit unsigned integer samples")),
    _tiff_plain("uint32-rgb", _refusal(RGB16.astype(np.uint32), 32, 2, 1, r"32-bit unsigned integer samples")),
    _tiff_plain("uint12", _refusal(GREY16 >> 4, 12, 1, 1, r"12-bit unsigned integer samples")),
    _tiff_plain("cmyk", lambda: (_tifffile(np.dstack([RGB8, GREY8]), photometric="separated"), r"CMYK")),
    _tiff_plain("cmyk-jpeg", lambda: (_pillow(RGB8, "CMYK", "TIFF", compression="jpeg"), r"CMYK")),
    _tiff_plain(
        "rgb-two-extra", lambda: (tiff_bytes(np.dstack([RGB8, ALPHA8, GREY8]), 8, 2, extra=(2, 0)), r"2 extra samples")
    ),
]
for _depth in (8, 16):
    for _extra in (0, 1, 2, None):
        TIFF_SOURCES.append(_tiff_alpha(False, _depth, _extra, "tiny" if _extra is None else "tifffile"))
        TIFF_SOURCES.append(_tiff_alpha(True, _depth, _extra, "tiny" if _extra is None else "tifffile"))
    TIFF_SOURCES.append(_tiff_alpha(False, _depth, 2, "separate"))
    TIFF_SOURCES.append(_tiff_alpha(False, _depth, 1, "separate"))
    TIFF_SOURCES.append(_tiff_alpha(True, _depth, 2, "tiles"))
    TIFF_SOURCES.append(_tiff_alpha(False, _depth, None, "opencv"))


# ----------------------------------------------------------------------------------- other formats


def _bmp_v5_alpha(mask: int) -> tuple[bytes, Expect]:
    """OpenCV's 32-bit BMP (BITMAPV5HEADER, BI_BITFIELDS) with its alpha mask set to `mask`: alpha is the
    4th byte iff the mask names it (BITMAPV5HEADER bV5AlphaMask)."""
    ok, encoded = cv2.imencode(".bmp", cv2.cvtColor(np.dstack([RGB8, ALPHA8]), cv2.COLOR_RGBA2BGRA))
    assert ok
    data = bytearray(encoded.tobytes())
    assert struct.unpack_from("<I", data, 14)[0] >= 56 and struct.unpack_from("<I", data, 30)[0] == 3
    struct.pack_into("<I", data, 14 + 52, mask)
    return bytes(data), Expect(RGB8, ALPHA8 if mask else None)


def _jpeg_expect(data: bytes) -> Expect:
    """A JPEG source is what libjpeg decodes (OpenCV's decoder, the one read_image uses), in RGB order."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return Expect(pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[..., ::-1]))


def _jpeg(mode: str, **kwargs) -> Callable[[], tuple[bytes, Expect]]:
    def make() -> tuple[bytes, Expect]:
        data = _pillow(RGB8, mode, "JPEG", quality=92, **kwargs)
        expect = _jpeg_expect(data)
        expect.icc = kwargs.get("icc_profile")
        return data, expect

    return make


OTHER_SOURCES = [
    Source("jpeg-rgb", ".jpg", _cached(_jpeg("RGB"))),
    Source("jpeg-grey", ".jpg", _cached(_jpeg("L"))),
    Source("jpeg-cmyk", ".jpg", _cached(lambda: (_pillow(RGB8, "CMYK", "JPEG"), r"CMYK"))),
    Source("webp-rgb", ".webp", _cached(lambda: (_pillow(RGB8, "RGB", "WEBP", lossless=True), Expect(RGB8)))),
    Source(
        "webp-rgba",
        ".webp",
        _cached(
            lambda: (
                _pillow(np.dstack([RGB8, ALPHA8]), "RGBA", "WEBP", lossless=True, exact=True),
                Expect(RGB8, ALPHA8),
            )
        ),
    ),
    Source("webp-lossy", ".webp", _cached(lambda: (_pillow(RGB8, "RGB", "WEBP", quality=90), Expect(RGB8, psnr=28.0)))),
    Source("bmp-rgb", ".bmp", _cached(lambda: (_pillow(RGB8, "RGB", "BMP"), Expect(RGB8)))),
    Source("bmp-grey", ".bmp", _cached(lambda: (_pillow(GREY8, "L", "BMP"), Expect(GREY8)))),
    Source(
        "bmp-bilevel",
        ".bmp",
        _cached(
            lambda: (
                _pillow((GREY8 > 100).astype(np.uint8) * 255, "1", "BMP"),
                Expect(np.where(GREY8 > 100, 255, 0).astype(np.uint8)),
            )
        ),
    ),
    Source(
        "bmp-palette",
        ".bmp",
        _cached(
            lambda: (
                _pillow(RGB8, "P", "BMP"),
                Expect(np.asarray(PILImage.fromarray(RGB8).convert("P").convert("RGB"))),
            )
        ),
    ),
    Source("bmp-v5-alpha", ".bmp", _cached(lambda: _bmp_v5_alpha(0xFF000000))),
    Source("bmp-v5-no-alpha-mask", ".bmp", _cached(lambda: _bmp_v5_alpha(0))),
]

# Large ICC profiles through every input format that holds one (JPEG splits them over APP2 markers, ICC.1
# B.4; a PNG iCCP over 1 MB is beyond Pillow's default text-chunk limit).
ICC_SIZES = {"srgb": 0, "100k": 100_000, "1.1m": 1_100_000}
ICC_SOURCES = []
for _label, _extra_bytes in ICC_SIZES.items():
    _icc = icc_profile(_extra_bytes)
    ICC_SOURCES += [
        Source(
            f"icc-{_label}-png",
            ".png",
            _cached(lambda icc=_icc: (png_bytes(RGB8, 8, 2, icc=icc), Expect(RGB8, icc=icc))),
        ),
        Source(f"icc-{_label}-jpeg", ".jpg", _cached(_jpeg("RGB", icc_profile=_icc))),
        Source(
            f"icc-{_label}-webp",
            ".webp",
            _cached(
                lambda icc=_icc: (_pillow(RGB8, "RGB", "WEBP", lossless=True, icc_profile=icc), Expect(RGB8, icc=icc))
            ),
        ),
        Source(
            f"icc-{_label}-tiff",
            ".tif",
            _cached(lambda icc=_icc: (_tifffile(RGB8, photometric="rgb", iccprofile=icc), Expect(RGB8, icc=icc))),
        ),
    ]
_GRAY_ICC = icc_profile(0, b"GRAY")
ICC_SOURCES += [
    Source(
        "icc-grey-png", ".png", _cached(lambda: (png_bytes(GREY8, 8, 0, icc=_GRAY_ICC), Expect(GREY8, icc=_GRAY_ICC)))
    ),
    Source(
        "icc-grey-alpha16-png",
        ".png",
        _cached(
            lambda: (
                png_bytes(np.dstack([GREY16, ALPHA16]), 16, 4, icc=_GRAY_ICC),
                Expect(GREY16, ALPHA16, icc=_GRAY_ICC),
            )
        ),
    ),
    Source(
        "icc-rgba16-png",
        ".png",
        _cached(
            lambda: (
                png_bytes(np.dstack([RGB16, ALPHA16]), 16, 6, icc=icc_profile(100_000)),
                Expect(RGB16, ALPHA16, icc=icc_profile(100_000)),
            )
        ),
    ),
    Source(
        "icc-cmyk-on-rgb-tiff",
        ".tif",
        _cached(
            lambda: (
                _tifffile(RGB8, photometric="rgb", iccprofile=icc_profile(0, b"CMYK")),
                r"ICC profile is for CMYK data",
            )
        ),
    ),
]

SOURCES = PNG_SOURCES + TIFF_SOURCES + OTHER_SOURCES + ICC_SOURCES
READABLE = [s for s in SOURCES if isinstance(s.make()[1], Expect)]
REFUSED = [s for s in SOURCES if isinstance(s.make()[1], str)]


# ----------------------------------------------------------------------------------------- checking


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    top = float(np.iinfo(a.dtype).max)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(top * top / mse)


def _write_source(tmp_path: Path, source: Source) -> Path:
    path = tmp_path / f"source{source.suffix}"
    path.write_bytes(source.make()[0])
    return path


def standin_x4(image: Image) -> Image:
    """A result of the same layout as the network's: colour and alpha repeated 4x4, the metadata carried."""

    def x4(plane: np.ndarray | None) -> np.ndarray | None:
        return None if plane is None else np.repeat(np.repeat(plane, SCALE, axis=0), SCALE, axis=1)

    return Image(x4(image.colour), x4(image.alpha), image.icc, image.exif)


def check_decoded(image: Image, expect: Expect) -> None:
    assert image.colour.shape == expect.colour.shape, f"layout {image.colour.shape}, expected {expect.colour.shape}"
    assert image.dtype == expect.colour.dtype, f"depth {image.dtype}, expected {expect.colour.dtype}"
    assert (image.alpha is None) == (expect.alpha is None), f"alpha {'absent' if image.alpha is None else 'present'}"
    if expect.psnr is None:
        assert np.array_equal(image.colour, expect.colour), "colour differs from the source's samples"
    else:
        assert psnr(image.colour, expect.colour) >= expect.psnr
    if expect.alpha is not None:
        assert image.alpha.dtype == expect.alpha.dtype and np.array_equal(image.alpha, expect.alpha), "alpha differs"
    sizes = [None if icc is None else len(icc) for icc in (image.icc, expect.icc)]
    assert image.icc == expect.icc, f"ICC of {sizes[0]} bytes, expected {sizes[1]}"


def independent_icc(path: Path) -> bytes | None:
    """The ICC profile as the format's own rules store it, parsed here (not by the code under test)."""
    data = path.read_bytes()
    suffix = path.suffix
    if suffix == ".png":  # 11.3.2.3 iCCP: name, NUL, method 0, zlib stream; before PLTE and IDAT
        at = 8
        while at < len(data):
            length, kind = struct.unpack_from(">I4s", data, at)
            body = data[at + 8 : at + 8 + length]
            assert zlib.crc32(kind + body) == struct.unpack_from(">I", data, at + 8 + length)[0]
            if kind == b"iCCP":
                return zlib.decompress(body[body.index(b"\x00") + 2 :])
            if kind == b"IDAT":
                return None
            at += 12 + length
        return None
    if suffix == ".jpg":  # ICC.1 B.4: APP2 "ICC_PROFILE\0", sequence number, count; joined in order
        parts, at = {}, 2
        while data[at] == 0xFF and data[at + 1] not in (0xDA, 0xD9):
            length = struct.unpack_from(">H", data, at + 2)[0]
            body = data[at + 4 : at + 2 + length]
            if data[at + 1] == 0xE2 and body.startswith(b"ICC_PROFILE\x00"):
                sequence, count = body[12], body[13]
                assert 1 <= sequence <= count and sequence not in parts
                parts[sequence] = (count, body[14:])
            at += 2 + length
        if not parts:
            return None
        counts = {count for count, _ in parts.values()}
        assert len(counts) == 1 and sorted(parts) == list(range(1, counts.pop() + 1)), "APP2 markers incomplete"
        return b"".join(parts[i][1] for i in sorted(parts))
    if suffix == ".webp":  # RIFF: VP8X, then an ICCP chunk
        at = 12
        while at < len(data):
            kind, length = struct.unpack_from("<4sI", data, at)
            if kind == b"ICCP":
                return data[at + 8 : at + 8 + length]
            at += 8 + length + (length & 1)
        return None
    if suffix == ".tif":
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(34675)
            return None if tag is None else bytes(tag.value)
    if suffix == ".bmp":  # BITMAPV5HEADER: bV5CSType 'MBED', bV5ProfileData (from the header), bV5ProfileSize
        header_size = struct.unpack_from("<I", data, 14)[0]
        if header_size < 124 or data[14 + 56 : 14 + 60] != b"DEBM":
            return None
        offset, size = struct.unpack_from("<II", data, 14 + 112)
        return data[14 + offset : 14 + offset + size]
    raise AssertionError(suffix)


def check_written(target: Path, result: Image, source_path: Path) -> None:
    back = read_image(target)
    expected = result
    # WebP has no greyscale, and this tool writes grey+alpha TIFF as RGBA (as it always has, so that its
    # TIFF results stay byte for byte what they were): both come back with R = G = B, nothing lost.
    if result.is_grey and (target.suffix == ".webp" or (target.suffix == ".tif" and result.alpha is not None)):
        expected = Image(np.repeat(result.colour[..., None], 3, axis=2), result.alpha, result.icc)
    assert back.colour.shape == expected.colour.shape and back.dtype == expected.dtype
    assert (back.alpha is None) == (expected.alpha is None)
    if target.suffix in LOSSLESS:
        assert np.array_equal(back.colour, expected.colour), "colour changed in a lossless format"
    else:
        assert psnr(back.colour, expected.colour) >= JPEG_OUT_PSNR
    if expected.alpha is not None:
        assert np.array_equal(back.alpha, expected.alpha), "alpha changed"
    assert back.icc == result.icc
    assert independent_icc(target) == result.icc
    if target.suffix != ".bmp":  # BMP holds no mark (runtime/images/io.py UNMARKED)
        assert imageio.is_result_of(source_path, target), "no mark of this tool, or not 4x the source"


# -------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("source", READABLE, ids=lambda s: s.name)
def test_read_gives_the_source_samples(tmp_path: Path, source: Source) -> None:
    path = _write_source(tmp_path, source)
    check_decoded(read_image(path), source.make()[1])


@pytest.mark.parametrize("suffix", OUTPUTS)
@pytest.mark.parametrize("source", READABLE, ids=lambda s: s.name)
def test_round_trip_into_every_format(tmp_path: Path, source: Source, suffix: str) -> None:
    """Written whole and read back the same, or refused with the message output_problem gives beforehand."""
    path = _write_source(tmp_path, source)
    image = read_image(path)
    result = standin_x4(image)
    target = tmp_path / f"result{suffix}"
    problem = imageio.output_problem(path, suffix)
    try:
        write_image(target, result)
    except ImageError as exc:
        assert problem is not None, f"write_image refused what output_problem allowed: {exc}"
        assert str(exc) == f"{target}: {problem}"
        assert not target.exists()
        return
    assert problem is None, f"output_problem said {problem!r}, write_image wrote it"
    check_written(target, result, path)


@pytest.mark.parametrize("source", REFUSED, ids=lambda s: s.name)
def test_refused_from_the_header_with_the_cause(
    tmp_path: Path, source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write_source(tmp_path, source)
    pattern = source.make()[1]

    def no_pixels(*_args: object) -> None:
        raise AssertionError("pixels were decoded before the refusal")

    monkeypatch.setattr(imageio, "_decode", no_pixels)
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert re.search(pattern, message), message
    assert "damaged" not in message and "corrupt" not in message and "bug" not in message
    with pytest.raises(ImageError) as again:
        imageio.output_problem(path, ".png")
    assert str(again.value) == message


@pytest.mark.parametrize("source", READABLE, ids=lambda s: s.name)
def test_output_problem_reads_no_pixels(tmp_path: Path, source: Source, monkeypatch: pytest.MonkeyPatch) -> None:
    """The planning step asks before inference; it must cost a header read, not a decode."""
    path = _write_source(tmp_path, source)

    def no_pixels(*_args: object) -> None:
        raise AssertionError("output_problem decoded pixels")

    monkeypatch.setattr(imageio, "_decode", no_pixels)
    for suffix in OUTPUTS:
        imageio.output_problem(path, suffix)


def test_the_matrix_covers_every_png_colour_type_and_depth() -> None:
    """PNG 11.2.1 Table 11.1: the allowed bit depths of each colour type, each with and without tRNS where
    the colour type may have one (tRNS is not allowed with types 4 and 6)."""
    names = {s.name for s in PNG_SOURCES}
    for colour_type, depths in PNG_DEPTHS.items():
        for depth in depths:
            assert f"png-type{colour_type}-{depth}bit-none" in names
            assert (f"png-type{colour_type}-{depth}bit-trns" in names) == (colour_type in (0, 2, 3))


@pytest.mark.parametrize(
    ("size", "suffix", "message"),
    [
        ((16_384, 10), ".webp", r"over 16,383 pixels wide or tall, which WebP cannot hold"),
        ((10, 65_501), ".jpg", r"over 65,500 pixels wide or tall, which JPEG cannot hold"),
        ((1_000_001, 1), ".png", r"over 1,000,000 pixels wide or tall, which PNG readers refuse"),
    ],
)
def test_side_limits_are_known_before_encoding(
    tmp_path: Path, size: tuple[int, int], suffix: str, message: str
) -> None:
    """A result beyond a format's side limit is refused by its size, before the encoder is asked (a narrow
    image keeps this cheap); output_problem gives the same from a source a quarter of that size."""
    width, height = size
    target = tmp_path / f"wide{suffix}"
    with pytest.raises(ImageError, match=message) as info:
        write_image(target, Image(np.zeros((height, width), np.uint8)))
    assert not target.exists()
    source = tmp_path / "narrow.png"
    source.write_bytes(png_bytes(np.zeros((-(-height // 4), -(-width // 4)), np.uint8), 1, 0))
    assert f"{target}: {imageio.output_problem(source, suffix)}" == str(info.value)


def test_jpeg_holds_no_larger_icc_than_255_markers(tmp_path: Path) -> None:
    """ICC.1 B.4: at most 255 APP2 markers of 65,519 profile bytes each."""
    icc = icc_profile(255 * 65_519 + 1 - len(SRGB))
    source = tmp_path / "huge_icc.png"
    source.write_bytes(png_bytes(RGB8[:2, :2], 8, 2, icc=icc))
    problem = imageio.output_problem(source, ".jpg")
    assert problem is not None and "ICC profile" in problem and "16,707,345" in problem
    assert imageio.output_problem(source, ".tif") is None
    assert "larger than libpng reads" in imageio.output_problem(source, ".png")
    image = standin_x4(read_image(source))
    with pytest.raises(ImageError) as info:
        write_image(tmp_path / "out.jpg", image)
    assert str(info.value) == f"{tmp_path / 'out.jpg'}: {problem}"


def test_pillow_limits_are_restored(tmp_path: Path) -> None:
    """Reading a header lifts Pillow's bomb guard and text-chunk limit only while it reads."""
    saved = (PILImage.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK)
    source = tmp_path / "icc.png"
    source.write_bytes(png_bytes(RGB8, 8, 2, icc=icc_profile(1_100_000)))
    read_image(source)
    assert (PILImage.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK) == saved


def test_exif_larger_than_a_jpeg_marker_is_known_before_encoding(tmp_path: Path) -> None:
    """A PNG's eXIf chunk may be larger than one JPEG APP1 marker holds (65,527 bytes after "Exif\\0\\0"):
    JPEG is refused from the header, PNG and WebP keep it whole."""
    exif = PILImage.Exif()
    exif[0x010E] = "x" * 70_000  # ImageDescription
    source = tmp_path / "big_exif.png"
    PILImage.fromarray(RGB8).save(source, exif=exif.tobytes())
    problem = imageio.output_problem(source, ".jpg")
    assert problem is not None and "EXIF" in problem and "65,527" in problem
    image = standin_x4(read_image(source))
    with pytest.raises(ImageError) as info:
        write_image(tmp_path / "out.jpg", image)
    assert str(info.value) == f"{tmp_path / 'out.jpg'}: {problem}"
    for suffix in (".png", ".webp"):
        assert imageio.output_problem(source, suffix) is None
        write_image(tmp_path / f"out{suffix}", image)
        assert read_image(tmp_path / f"out{suffix}").exif is not None
        with PILImage.open(tmp_path / f"out{suffix}") as im:
            assert im.getexif()[0x010E] == "x" * 70_000 and im.getexif()[0x0131] == SOFTWARE
