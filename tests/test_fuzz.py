"""Fuzz: a few hundred damaged images of every supported format through real `upscale.py` folder runs.

What is shown: for 252 mutated files (bit flips, truncations, header edits, zeroed, spliced,
repeated and appended bytes) made from 21 small PNG, JPEG, WebP, TIFF and BMP files (8- and 16-bit, grey,
RGB, RGBA, grey+alpha, EXIF-rotated, progressive, odd row stride), run as five folder runs:

- each run ends with exit 0 or 1 (1 exactly when a file failed) and no traceback;
- stderr holds nothing but one `error:` line per failed file, naming it, and the `N written, M failed`
  line, which adds up (no library noise, no line for a file that was written);
- every written output decodes (cv2.IMREAD_UNCHANGED) at exactly 4x the size the input decodes at with
  runtime.images.io.read_image (after EXIF orientation); a file that does not decode was refused;
- not silently wrong: a lossless output is exactly `runtime.Upscaler` (same backend) applied to what the
  possibly damaged input decodes to, and the undamaged controls decode to exactly the pixels they were
  made from (so "what decodes" is itself checked);
- the inputs are byte-for-byte unchanged and the folders hold nothing but the inputs and the expected
  outputs (no `.part` temporaries).

A second test runs the decoder alone, in this process, on 2,000 more mutants (8 more seeds): one complete
image or an ImageError, never another exception (which ends a folder run) and never a printed word.

Design choices:

- A seeded numpy generator, not Hypothesis. A case costs a model run in a subprocess, so the cases must
  be made up front and run as a few folder runs (one model load per ~55 files); that does not fit
  Hypothesis's one-example-per-call loop, its shrinking or its example database, and Hypothesis is not a
  dependency of the project. A fixed seed tries the same files on every run (for given encoder
  versions), and a failure names the file and how it was made, which is what shrinking would give.
- Mutations are format-aware where it matters: a random bit flip mostly lands in compressed data, so two
  of the twelve mutants per seed edit the header fields decoders trust (PNG IHDR with and without a
  valid CRC, JPEG SOF and segment lengths, WebP RIFF/VP8/VP8L/VP8X sizes, TIFF IFD entries and the
  next-IFD offset, BMP sizes, bit depth and compression) with values from off-by-one to 2**32-1.
- `--max-pixels 100000` (the inputs have at most 1024 pixels): a header edit may claim any size, and a
  decoder that fills a claimed 30000 x 20 image from 1 KB would otherwise cost a minute of CPU per file.
  Claims above the limit exercise the decompression-bomb refusal; the default limit is tested elsewhere.
- The batches vary what a user varies: results beside the inputs, in an output folder, with `--ext png`
  (which also makes the JPEG cases lossless and so comparable exactly). `--backend onnxruntime`, so the
  comparison with an in-process Upscaler is exact on every machine (auto would pick FP16 TensorRT on a GPU).
- Two format facts the comparisons allow for: lossless WebP does not keep the colour of fully transparent
  pixels (invisible), and OpenCV's TIFF reader premultiplies 8-bit unassociated alpha, so written TIFFs
  are read back with tifffile.

Time: about 15 s for the three tests on 2 loaded CPU cores, plus the session's one export when run alone.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from runtime.images.io import ImageError, read_image
from tests.conftest import ROOT

SEED = 20240808
MUTANTS_PER_SEED = 12
BATCHES = 5
MAX_PIXELS = 100_000
LOSSLESS = {".png", ".tif", ".tiff", ".bmp", ".webp"}  # WebP results are written lossless
COUNT_LINE = re.compile(r"^(\d+) written, (\d+) failed(?:, (\d+) skipped)?$")


@dataclass(eq=False)  # compared by identity (`in` lists of cases); the fields hold arrays
class Case:
    name: str  # unique file name; its stem starts with a unique "mNNN-" tag
    data: bytes
    how: str  # how it was made, for failure messages
    pixels: np.ndarray | None = None  # what an unmodified lossless file holds (Upscaler's layout)

    @property
    def tag(self) -> str:
        return self.name.split("-", 1)[0] + "-"


# ---------------------------------------------------------------- the seed images: small real photos


def seed_files(rng: np.random.Generator) -> dict[str, tuple[bytes, np.ndarray | None]]:
    """Small crops (16x16 to 24x32) of scikit-image's coffee photo in every format and layout supported:
    name -> (file bytes, the pixels a lossless file holds in Upscaler's layout, None for lossy ones)."""
    from skimage import data

    coffee = data.coffee()

    def rgb(h: int, w: int) -> np.ndarray:
        y, x = int(rng.integers(0, coffee.shape[0] - h)), int(rng.integers(0, coffee.shape[1] - w))
        return np.ascontiguousarray(coffee[y : y + h, x : x + w])

    def grey(h: int, w: int) -> np.ndarray:
        return cv2.cvtColor(rgb(h, w), cv2.COLOR_RGB2GRAY)

    def to16(a: np.ndarray) -> np.ndarray:  # real 16-bit content: the low byte is not a copy of the high one
        return a.astype(np.uint16) * 257 + rng.integers(0, 257, a.shape).astype(np.uint16)

    def alpha(h: int, w: int, binary: bool = False) -> np.ndarray:
        ramp = np.tile((np.arange(w) * 255 // (w - 1)).astype(np.uint8), (h, 1))
        return np.where(ramp > 127, 255, 0).astype(np.uint8) if binary else ramp

    def rgba(h: int, w: int) -> np.ndarray:
        return np.dstack([rgb(h, w), alpha(h, w)])

    def cv(ext: str, pixels: np.ndarray, *params: int) -> bytes:
        ok, buffer = cv2.imencode(ext, cv_layout(pixels), list(params))
        assert ok, ext
        return buffer.tobytes()

    def tif(pixels: np.ndarray, **kwargs) -> bytes:
        out = io.BytesIO()
        tifffile.imwrite(out, pixels, **kwargs)
        return out.getvalue()

    def grey_alpha_png(pixels: np.ndarray) -> bytes:
        out = io.BytesIO()
        PILImage.fromarray(pixels, "LA").save(out, "PNG")
        return out.getvalue()

    def lossless(make: Callable[[np.ndarray], bytes], pixels: np.ndarray) -> tuple[bytes, np.ndarray]:
        return make(pixels), pixels

    def lossy(make: Callable[[np.ndarray], bytes], pixels: np.ndarray) -> tuple[bytes, None]:
        return make(pixels), None

    png, webp = (lambda p: cv(".png", p)), (lambda p: cv(".webp", p, cv2.IMWRITE_WEBP_QUALITY, 101))
    return {
        "png_rgb8.png": lossless(png, rgb(20, 24)),
        "png_rgb16.png": lossless(png, to16(rgb(24, 32))),
        "png_grey8.png": lossless(png, grey(16, 20)),
        "png_grey16.png": lossless(png, to16(grey(20, 16))),
        "png_rgba8.png": lossless(png, rgba(24, 20)),
        "png_grey_alpha.png": lossless(grey_alpha_png, np.dstack([grey(16, 24), alpha(16, 24, binary=True)])),
        "jpg_rgb.jpg": lossy(lambda p: cv(".jpg", p, cv2.IMWRITE_JPEG_QUALITY, 90), rgb(24, 32)),
        "jpg_progressive.jpeg": lossy(lambda p: cv(".jpg", p, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), rgb(20, 24)),
        "jpg_grey.jpg": lossy(lambda p: cv(".jpg", p), grey(16, 24)),
        "jpg_exif6.jpg": lossy(lambda p: jpeg_with_orientation(cv_layout(p), 6), rgb(16, 28)),
        "webp_lossy.webp": lossy(lambda p: cv(".webp", p, cv2.IMWRITE_WEBP_QUALITY, 80), rgb(20, 28)),
        "webp_lossless.webp": lossless(webp, rgb(24, 24)),
        "webp_rgba.webp": lossless(webp, rgba(16, 20)),
        "tif_rgb8.tif": lossless(lambda p: tif(p, photometric="rgb"), rgb(20, 24)),
        "tif_rgb16.tiff": lossless(lambda p: tif(p, photometric="rgb", compression="zlib"), to16(rgb(24, 20))),
        "tif_grey8.tif": lossless(lambda p: tif(p, photometric="minisblack"), grey(16, 32)),
        # Unassociated alpha, as Pillow, GIMP and this project's own writer store RGBA TIFFs.
        "tif_rgba8.tiff": lossless(lambda p: tif(p, photometric="rgb", extrasamples=["unassalpha"]), rgba(20, 20)),
        "tif_opencv_lzw.tif": lossless(lambda p: cv(".tif", p), rgb(16, 24)),
        "bmp_rgb.bmp": lossless(lambda p: cv(".bmp", p), rgb(20, 24)),
        "bmp_grey.bmp": lossless(lambda p: cv(".bmp", p), grey(24, 16)),
        "bmp_odd_stride.bmp": lossless(lambda p: cv(".bmp", p), rgb(17, 21)),  # rows padded to 4 bytes
    }


def jpeg_with_orientation(pixels_bgr: np.ndarray, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment holding the orientation tag (6: shown turned a quarter clockwise)."""
    ok, encoded = cv2.imencode(".jpg", pixels_bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0" * 4
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
    data = encoded.tobytes()
    return data[:2] + app1 + data[2:]


# ---------------------------------------------------------------- mutations


def size_value(rng: np.random.Generator, original: int) -> int:
    """A value for a size field: near the truth, degenerate, or absurd."""
    choices = [
        original + int(rng.integers(1, 9)),
        max(original - int(rng.integers(1, 9)), 0),
        original * 2,
        0,
        1,
        30000,
        65535,
        2**31 - 1,
        2**32 - 1,
    ]
    return choices[int(rng.integers(len(choices)))]


def put(data: bytearray, offset: int, fmt: str, value: int) -> None:
    """Write `value` into `data` at `offset`, wrapped to the field's width (a header edit, not an error)."""
    bits = struct.calcsize(fmt) * 8
    value &= (1 << bits) - 1
    if fmt[-1] in "hil" and value >= 1 << (bits - 1):
        value -= 1 << bits
    struct.pack_into(fmt, data, offset, value)


def png_header_edit(rng: np.random.Generator, data: bytearray) -> str:
    """Edit one IHDR field; half the time the CRC is fixed so the edit is not caught by the checksum."""
    field = int(rng.integers(4))
    if field < 2:
        offset = 16 + 4 * field
        old = struct.unpack_from(">I", data, offset)[0]
        put(data, offset, ">I", size_value(rng, old))
        new = struct.unpack_from(">I", data, offset)[0]
    else:
        offset = 24 if field == 2 else 25  # bit depth, colour type
        old, new = data[offset], int(rng.choice([0, 1, 2, 3, 4, 6, 8, 16, 255]))
        data[offset] = new
    fixed = bool(rng.integers(2))
    if fixed:
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    names = {16: "width", 20: "height", 24: "bit depth", 25: "colour type"}
    return f"IHDR {names[offset]} {old} -> {new}{' (CRC fixed)' if fixed else ''}"


def jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(marker, offset of the marker) of each header segment up to the first scan."""
    found, offset = [], 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        found.append((marker, offset))
        if marker == 0xDA:
            break
        offset += 2 + struct.unpack_from(">H", data, offset + 2)[0]
    return found


def jpeg_header_edit(rng: np.random.Generator, data: bytearray) -> str:
    segments = jpeg_segments(bytes(data))
    sof = next(offset for marker, offset in segments if marker in (0xC0, 0xC1, 0xC2))
    what = int(rng.integers(5))
    if what < 2:  # height, width
        offset = sof + 5 + 2 * what
        old = struct.unpack_from(">H", data, offset)[0]
        put(data, offset, ">H", size_value(rng, old))
        return f"SOF {'height' if what == 0 else 'width'} {old} -> {struct.unpack_from('>H', data, offset)[0]}"
    if what == 2:  # sample precision, components
        offset = sof + int(rng.choice([4, 9]))
        data[offset] = int(rng.choice([0, 1, 3, 4, 12, 16, 255]))
        return f"SOF byte {offset - sof}"
    if what == 3:  # one byte of a quantisation or Huffman table, or of the EXIF orientation
        marker, offset = segments[int(rng.integers(len(segments)))]
        length = struct.unpack_from(">H", data, offset + 2)[0]
        at = offset + 4 + int(rng.integers(max(length - 2, 1)))
        data[at] = int(rng.integers(256))
        return f"segment FF{marker:02X} byte {at}"
    marker, offset = segments[int(rng.integers(len(segments)))]  # a segment length
    put(data, offset + 2, ">H", size_value(rng, struct.unpack_from(">H", data, offset + 2)[0]))
    return f"segment FF{marker:02X} length"


def webp_header_edit(rng: np.random.Generator, data: bytearray) -> str:
    what = int(rng.integers(3))
    if what == 0:
        put(data, 4, "<I", size_value(rng, struct.unpack_from("<I", data, 4)[0]))
        return "RIFF size"
    if what == 1:
        put(data, 16, "<I", size_value(rng, struct.unpack_from("<I", data, 16)[0]))
        return f"{bytes(data[12:16])!r} chunk size"
    kind = bytes(data[12:16])
    if kind == b"VP8 ":  # 14-bit width and height (+ 2 scale bits) after the start code
        offset = 26 + 2 * int(rng.integers(2))
        put(data, offset, "<H", size_value(rng, struct.unpack_from("<H", data, offset)[0]))
    elif kind == b"VP8L":  # 14 bits width-1, 14 bits height-1, packed after the 0x2f signature
        offset = 21
        put(data, offset, "<I", struct.unpack_from("<I", data, offset)[0] ^ (1 << int(rng.integers(32))))
    else:  # VP8X canvas size, 24 bits each
        offset = 24 + 3 * int(rng.integers(2))
        data[offset : offset + 3] = (size_value(rng, 20) & 0xFFFFFF).to_bytes(3, "little")
    return f"{kind!r} size fields at {offset}"


TIFF_TAGS = {256: "width", 257: "length", 258: "bits", 259: "compression", 262: "photometric",
             273: "strip offsets", 277: "samples", 278: "rows per strip", 279: "strip bytes", 284: "planar",
             338: "extra samples"}  # fmt: skip


def tiff_header_edit(rng: np.random.Generator, data: bytearray) -> str:
    """Edit the value of one IFD entry of a little-endian classic TIFF (all the seeds are)."""
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = []
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * i
        tag, kind, count = struct.unpack_from("<HHI", data, at)
        if tag in TIFF_TAGS and count == 1 and kind in (3, 4):
            entries.append((tag, kind, at + 8))
    if rng.integers(4) == 0:  # the offset of the next IFD: a second page, or garbage posing as one
        offset = ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0]
        new = int(rng.integers(0, len(data))) if rng.integers(2) else size_value(rng, 0)
        put(data, offset, "<I", new)
        return f"TIFF next IFD offset -> {new & 0xFFFFFFFF}"
    tag, kind, offset = entries[int(rng.integers(len(entries)))]
    fmt = "<H" if kind == 3 else "<I"
    old = struct.unpack_from(fmt, data, offset)[0]
    new = (
        size_value(rng, old)
        if tag in (256, 257, 273, 278, 279)
        else int(rng.choice([0, 1, 2, 3, 5, 7, 8, 16, 32, 65535]))
    )
    put(data, offset, fmt, new)
    return f"TIFF {TIFF_TAGS[tag]} {old} -> {new & (0xFFFF if kind == 3 else 0xFFFFFFFF)}"


def bmp_header_edit(rng: np.random.Generator, data: bytearray) -> str:
    fields = {"file size": (2, "<I"), "pixel offset": (10, "<I"), "width": (18, "<i"), "height": (22, "<i"),
              "bits": (28, "<H"), "compression": (30, "<I"), "image size": (34, "<I"), "colours used": (46, "<I")}  # fmt: skip
    name = list(fields)[int(rng.integers(len(fields)))]
    offset, fmt = fields[name]
    old = struct.unpack_from(fmt, data, offset)[0]
    if name == "bits":
        new = int(rng.choice([0, 1, 4, 8, 15, 16, 24, 32, 64]))
    elif name == "compression":
        new = int(rng.choice([1, 2, 3, 4, 5, 6, 255]))
    elif name == "height" and rng.integers(3) == 0:
        new = -old  # top-down rows: a valid image, shown flipped
    else:
        new = size_value(rng, abs(old))
    put(data, offset, fmt, new)
    return f"BMP {name} {old} -> {new}"


HEADER_EDITS: dict[str, Callable[[np.random.Generator, bytearray], str]] = {
    ".png": png_header_edit, ".jpg": jpeg_header_edit, ".jpeg": jpeg_header_edit, ".webp": webp_header_edit,
    ".tif": tiff_header_edit, ".tiff": tiff_header_edit, ".bmp": bmp_header_edit,
}  # fmt: skip


def mutate(rng: np.random.Generator, kind: str, original: bytes, suffix: str) -> tuple[bytes, str]:
    data = bytearray(original)
    n = len(data)
    if kind == "bitflip":  # 1 to 8 bits anywhere
        spots = rng.integers(0, n * 8, int(rng.integers(1, 9)))
        for bit in spots:
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data), f"bits {sorted(int(b) for b in spots)} flipped"
    if kind == "headflip":  # 1 to 3 bits in the first 64 bytes, where the structure is
        spots = rng.integers(0, min(n, 64) * 8, int(rng.integers(1, 4)))
        for bit in spots:
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data), f"header bits {sorted(int(b) for b in spots)} flipped"
    if kind == "truncate":  # anywhere from the first byte to one byte short
        cut = int(rng.integers(1, n))
        return bytes(data[:cut]), f"cut to {cut} of {n} bytes"
    if kind == "tail":  # the last few bytes missing: the case decoders most often get through
        cut = n - int(rng.integers(1, min(n, 48)))
        return bytes(data[:cut]), f"cut to {cut} of {n} bytes"
    if kind == "header":
        how = HEADER_EDITS[suffix](rng, data)  # edits `data` in place
        return bytes(data), how
    if kind == "zeros":  # a run of zero bytes, as from a bad sector
        start, length = int(rng.integers(0, n)), int(rng.integers(4, 64))
        data[start : start + length] = bytes(len(data[start : start + length]))
        return bytes(data), f"bytes {start}..{start + length} zeroed"
    if kind == "splice":  # bytes inserted or deleted: everything after shifts
        at, length = int(rng.integers(8, n)), int(rng.integers(1, 16))
        if rng.integers(2):
            return bytes(data[:at] + data[at + length :]), f"{length} bytes deleted at {at}"
        return bytes(data[:at] + rng.bytes(length) + data[at:]), f"{length} random bytes inserted at {at}"
    if kind == "append":  # junk after the image (common in the wild; the image itself is complete)
        return bytes(data + rng.bytes(int(rng.integers(1, 200)))), "random bytes appended"
    if kind == "duplicate":  # a copy of a random stretch appended right after itself
        start = int(rng.integers(0, n - 8))
        end = min(n, start + int(rng.integers(8, 128)))
        return bytes(data[:end] + data[start:end] + data[end:]), f"bytes {start}..{end} repeated"
    raise AssertionError(kind)


# Header edits twice per seed: random flips mostly land in compressed data and test the same decoder paths.
KINDS = ["bitflip", "headflip", "truncate", "header", "zeros", "splice", "header", "tail", "append", "duplicate",
         "bitflip", "truncate"]  # fmt: skip
assert len(KINDS) == MUTANTS_PER_SEED


def make_cases(seed: int = SEED) -> list[Case]:
    """The seed files themselves (controls, which must all be written) and their mutants, deterministically."""
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    for seed_name, (original, pixels) in seed_files(rng).items():
        stem, suffix = seed_name.rsplit(".", 1)
        suffix = "." + suffix
        cases.append(Case(f"m{len(cases):03d}-{stem}-original{suffix}", original, "unmodified", pixels))
        for kind in KINDS:
            data, how = mutate(rng, kind, original, suffix)
            while data == original:  # e.g. a field set to the value it had: draw again
                data, how = mutate(rng, kind, original, suffix)
            cases.append(Case(f"m{len(cases):03d}-{stem}-{kind}{suffix}", data, f"{kind}: {how}"))
    return cases


# ---------------------------------------------------------------- the runs and the checks


def expected_size(path: Path) -> tuple[int, int] | str:
    """(height, width) of the pixels the runtime decodes from `path`, or the reason it cannot."""
    try:
        image = read_image(path, MAX_PIXELS)
    except ImageError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - the point: anything else escapes as a traceback in upscale.py
        pytest.fail(f"read_image({path.name}) raised {type(exc).__name__}: {exc} (not an ImageError)")
    return image.colour.shape[:2]


def upscaler_layout(path: Path) -> np.ndarray:
    """What the runtime decodes from `path`, as the H x W [x 2, 3, 4] array `Upscaler` takes."""
    image = read_image(path, MAX_PIXELS)
    planes = [image.colour] if image.is_grey else [image.colour[..., c] for c in range(3)]
    planes += [] if image.alpha is None else [image.alpha]
    return planes[0] if len(planes) == 1 else np.dstack(planes)


def read_written(path: Path) -> np.ndarray:
    """A written result as stored, in cv_layout. TIFF through tifffile: OpenCV's TIFF reader premultiplies
    8-bit unassociated alpha into the colour, so it does not give back what is stored."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    stored = tifffile.imread(path)
    return stored if stored.ndim == 2 else np.dstack([stored[..., 2::-1], stored[..., 3:]])


def cv_layout(pixels: np.ndarray) -> np.ndarray:
    """Upscaler's H x W (grey), x 2 (grey, alpha), x 3 (RGB), x 4 (RGBA) as cv2.IMREAD_UNCHANGED reads a
    written file: grey, BGRA with B = G = R (grey+alpha), BGR, BGRA."""
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[2] == 2:
        return np.dstack([pixels[..., 0]] * 3 + [pixels[..., 1]])
    return np.dstack([pixels[..., 2::-1], pixels[..., 3:]])


@dataclass
class Batch:
    folder: Path
    outdir: Path  # where the results go: `folder` itself when the run writes beside the inputs
    args: list[str]
    cases: list[Case]
    ext: str | None = None  # --ext

    def output(self, name: str) -> Path:
        stem, suffix = Path(name).stem, Path(name).suffix
        return self.outdir / f"{stem}_x4{'.' + self.ext if self.ext else suffix}"


def run_upscale(exported, *args: str) -> subprocess.CompletedProcess:
    """upscale.py as a user runs it, with a timeout well under the test's budget: a hang is a failure."""
    command = [sys.executable, str(ROOT / "upscale.py"), *args, "--engines-dir", str(exported[0])]
    return subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=100)


def check_batch(batch: Batch, result: subprocess.CompletedProcess, before: dict[str, bytes]) -> list[Path]:
    """Every promise for one folder run; returns the written outputs that can be compared exactly."""
    stderr = result.stderr
    context = f"{batch.args}\nstderr:\n{stderr}"
    assert "Traceback" not in stderr, context
    assert result.returncode in (0, 1), context
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    counts = [COUNT_LINE.match(line) for line in lines if COUNT_LINE.match(line)]
    noise = [line for line in lines if line not in errors and not COUNT_LINE.match(line)]
    assert not noise, f"lines that are neither an error nor the summary (library noise?): {noise}\n{context}"

    # The inputs: byte for byte as they were, and nothing but them and the expected outputs in the folders.
    assert {c.name: (batch.folder / c.name).read_bytes() for c in batch.cases} == before, "an input was modified"
    outputs = {c.name: batch.output(c.name) for c in batch.cases}
    present = {p.name for p in batch.outdir.iterdir()}
    allowed = set(before) if batch.outdir == batch.folder else set()
    allowed |= {p.name for p in outputs.values()}
    assert present <= allowed, f"stray files: {sorted(present - allowed)}\n{context}"
    if batch.outdir != batch.folder:
        assert {p.name for p in batch.folder.iterdir()} == set(before), "files appeared among the inputs"

    written = [c for c in batch.cases if outputs[c.name].exists()]
    failed = [c for c in batch.cases if not outputs[c.name].exists()]
    assert result.returncode == (1 if failed else 0), context
    for case in failed:  # each failure one line that names the file, and no line for a file that was written
        naming = [line for line in errors if case.tag in line]
        assert len(naming) == 1, f"{case.name} ({case.how}) not written; error lines naming it: {naming}\n{context}"
    for line in errors:
        named = [c for c in batch.cases if c.tag in line]
        assert len(named) == 1 and named[0] in failed, f"error line for a written or unknown file: {line}"
    if failed:
        assert len(counts) == 1, context
        done, bad, skipped = counts[0].groups()
        assert (int(done), int(bad), skipped) == (len(written), len(failed), None), context

    comparable = []
    for case in batch.cases:
        expected = expected_size(batch.folder / case.name)
        if "original" in case.name:
            assert case in written, f"an undamaged file was not written: {case.name}\n{context}"
        if isinstance(expected, str):
            assert case in failed, f"{case.name} ({case.how}) does not decode ({expected}) but was written"
            continue
        if case not in written:
            continue  # decodes, and still refused with its one line (e.g. an alpha plane a .bmp cannot hold)
        out = cv2.imread(str(outputs[case.name]), cv2.IMREAD_UNCHANGED)
        assert out is not None, f"{outputs[case.name]} ({case.how}) does not decode"
        assert out.shape[:2] == (expected[0] * 4, expected[1] * 4), (
            f"{case.name} ({case.how}): {out.shape} vs {expected}"
        )
        if outputs[case.name].suffix.lower() in LOSSLESS:
            comparable.append(batch.folder / case.name)
    return comparable


def test_undamaged_files_decode_to_exactly_their_pixels(tmp_path) -> None:
    """The controls: every lossless seed file decodes to the very pixels it was made from (the fuzz
    comparisons below take what decodes as the truth, so the decoder itself is checked here)."""
    for case in make_cases():
        if case.pixels is None:
            continue
        path = tmp_path / case.name
        path.write_bytes(case.data)
        decoded = upscaler_layout(path)
        assert decoded.dtype == case.pixels.dtype and decoded.shape == case.pixels.shape, case.name
        truth = case.pixels.copy()
        if case.name.endswith(".webp") and truth.ndim == 3 and truth.shape[2] == 4:
            hidden = truth[..., 3] == 0  # lossless WebP drops the colour of fully transparent pixels
            truth[hidden, :3] = decoded[hidden, :3]
        worst = np.abs(decoded.astype(np.int64) - truth).max()
        assert worst == 0, f"{case.name}: decodes up to {worst} away from the pixels it holds"


DECODER_SEEDS = range(SEED + 1, SEED + 9)  # 8 more corpora, about 2,000 files: the decoder alone is cheap


def test_decoder_alone_on_many_more_mutants(tmp_path, capfd, caplog) -> None:
    """read_image on 2,000 more mutants, in this process: one complete image or an ImageError (what a run
    reports as one line), never another exception (a traceback that ends a folder run) and never a word
    on stdout or stderr (file descriptors included: the C libraries print there), nor a log record of
    WARNING or above (pytest captures those; in upscale.py Python prints them on stderr: Pillow logs
    "More samples per pixel than can be decoded" that way)."""
    escaped, printed = [], []
    for seed in DECODER_SEEDS:
        for case in make_cases(seed):
            path = tmp_path / case.name
            path.write_bytes(case.data)
            try:
                read_image(path, MAX_PIXELS)
            except ImageError:
                pass
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                escaped.append(f"seed {seed} {case.name} ({case.how}): {type(exc).__name__}: {exc}")
            out, err = capfd.readouterr()
            logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
            caplog.clear()
            if out or err or logged:
                printed.append(f"seed {seed} {case.name} ({case.how}): {(out + err + logged).strip()[:200]!r}")
            path.unlink()
    assert not escaped, f"{len(escaped)} files raised something other than ImageError:\n" + "\n".join(escaped[:10])
    assert not printed, f"{len(printed)} files made the decoders print:\n" + "\n".join(printed[:10])


def test_fuzzed_images_never_crash_never_leave_debris_and_never_write_a_wrong_size(tmp_path, exported) -> None:
    cases = make_cases()
    mutants = [c for c in cases if "-original." not in c.name]
    assert len(mutants) >= 200 and len({c.name for c in cases}) == len(cases)
    originals = {c.data for c in cases if "-original." in c.name}
    assert not any(c.data in originals for c in mutants)
    batches = []
    for index in range(BATCHES):
        folder = tmp_path / f"batch{index}"
        folder.mkdir()
        part = cases[index::BATCHES]
        for case in part:
            (folder / case.name).write_bytes(case.data)
        common = ["--backend", "onnxruntime", "--quiet", "--max-pixels", str(MAX_PIXELS)]
        if index == 0:  # results beside the inputs
            batches.append(Batch(folder, folder, [str(folder), *common], part))
        elif index == 1:  # every result as PNG: the JPEG cases become exactly comparable
            out = tmp_path / f"out{index}"
            batches.append(Batch(folder, out, [str(folder), str(out), *common, "--ext", "png"], part, "png"))
        else:
            out = tmp_path / f"out{index}"
            batches.append(Batch(folder, out, [str(folder), str(out), *common], part))

    comparable, outcomes = [], {"written": 0, "failed": 0}
    for batch in batches:
        before = {c.name: c.data for c in batch.cases}
        result = run_upscale(exported, *batch.args)
        comparable += [(path, batch) for path in check_batch(batch, result, before)]
        for case in batch.cases:
            outcomes["written" if batch.output(case.name).exists() else "failed"] += 1
    # Both outcomes must be common, or the mutations are too weak (all decode) or too strong (none do).
    assert outcomes["written"] >= 40 and outcomes["failed"] >= 40, outcomes

    # Not silently wrong: what was written is the upscale of what the (possibly damaged) file decodes to.
    from runtime import Upscaler

    with Upscaler(backend="onnxruntime", engines_dir=exported[0], max_pixels=MAX_PIXELS) as up:
        for source, batch in comparable:
            expected = cv_layout(up(upscaler_layout(source)))
            written = read_written(batch.output(source.name))
            assert written.dtype == expected.dtype and written.shape == expected.shape, source.name
            if batch.output(source.name).suffix == ".webp" and written.ndim == 3 and written.shape[2] == 4:
                # Lossless WebP keeps the colour of fully transparent pixels only in its `exact` mode, which
                # OpenCV does not set: there it may differ, invisibly.
                hidden = expected[..., 3] == 0
                expected[hidden, :3] = written[hidden, :3]
            assert np.array_equal(written, expected), f"{source.name}: the result is not the upscale of what decodes"
