"""A PNG writer that filters and deflates on every core: x4 results are 16x their input, and writing them
was the largest cost after inference (on a GPU, nearly all of it).

The image is cut into bands of rows, each about BAND_BYTES of samples. Each band is filtered (PNG filter
type 3, Average, on every row) and deflated on its own thread; the bands' raw deflate streams join into one
zlib stream, as pigz does: every band but the last ends with a sync flush (byte-aligned, not final), the
last with the final block, and the Adler-32 of all the filtered bytes follows. Deflate uses Z_RLE, whose
matches reach back one byte only, so no band needs the previous band's bytes as a dictionary: a band
compresses as well alone as in one stream, less the few bytes of its flush. The band cut depends on the image alone, never on the
number of threads: the file is the same byte for byte on any machine.

Deflate is zlib-ng's, through the zlib-ng package's copy of Python's zlib API: with Z_RLE it gives the same
bytes as Python's zlib in 0.63x its time (one thread, a 4000x3488 result; tests/test_png.py checks the
bytes are the same).

Why Average with Z_RLE at level 1: on the network's x4 results it gives smaller files than OpenCV's default
PNG (Sub filter, level 1, Z_RLE), in less time on one thread (figures in BENCHMARKS.md, from
`python -m bench.folder_throughput`). Z_RLE's output is the same at every level above 0, so there is no
level to choose. Memory: at most two bands per thread in flight, each about 2x BAND_BYTES (its filtered
bytes and their deflate).

Colour types 0 (grey), 2 (RGB), 4 (grey+alpha) and 6 (RGBA), 8 or 16 bits; iCCP and eXIf chunks. Errors are
Python exceptions (zlib's, numpy's, the stream's), never text printed by a C library, so writing needs no
capture of the process's stderr (see runtime/images/io.py) and runs beside decoding on other threads.
References: PNG specification (third edition), sections 9 (filters), 10 (compression), 11.3.2 (iCCP) and
11.3.6 (eXIf); RFC 1950 (zlib stream), RFC 1951 (deflate).
"""

from __future__ import annotations

import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import numpy as np
from zlib_ng import zlib_ng as zlib

from runtime.cores import usable_cores

SIGNATURE = b"\x89PNG\r\n\x1a\n"
BAND_BYTES = 1 << 20  # samples per band: of 64 KiB to 4 MiB, the fastest on one and two threads (prototype)
FILTER_BYTES = 64 * 1024  # samples filtered at once: the temporaries (3x this) stay in a core's L2 cache
AVERAGE = 3  # PNG filter type
_LEVEL = 1
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, FLEVEL 0 (fastest), no dictionary (RFC 1950)
_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_ADLER_BASE = 65521
# libpng refuses wider or taller images by default (PNG_USER_WIDTH_MAX, PNG_USER_HEIGHT_MAX), and with it
# OpenCV, most viewers and this tool's own reader, though the format allows 2^31 - 1.
LIBPNG_MAX_SIDE = 1_000_000


def write_png(
    stream: BinaryIO,
    samples: np.ndarray,
    *,
    icc: bytes | None = None,
    exif: bytes | None = None,
    threads: int | None = None,
) -> None:
    """Write `samples` (H x W grey, or H x W x C with C = 2 grey+alpha, 3 RGB, 4 RGBA; uint8 or uint16, in
    that channel order) as a PNG to `stream`, with an iCCP chunk for `icc` and an eXIf chunk for `exif`
    (TIFF-structured EXIF). `threads` defaults to the cores this process may use (runtime/cores.py)."""
    # Every argument is checked before the first byte is written.
    if samples.dtype.kind != "u" or samples.dtype.itemsize not in (1, 2):
        raise ValueError(f"PNG holds unsigned 8- or 16-bit samples, not {samples.dtype.name}")
    channels = samples.shape[2] if samples.ndim == 3 else 1
    if samples.ndim not in (2, 3) or channels not in _COLOUR_TYPE or 0 in samples.shape[:2]:
        raise ValueError(f"cannot write an array of shape {samples.shape} as a PNG")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, not {threads!r}")
    for name, block in (("icc", icc), ("exif", exif)):
        if block is not None and not isinstance(block, bytes):
            raise ValueError(f"{name} must be bytes, not {type(block).__name__}")
    height, width = samples.shape[:2]
    depth = 8 * samples.dtype.itemsize
    _write_all(stream, SIGNATURE)
    _chunk(stream, b"IHDR", struct.pack(">IIBBBBB", width, height, depth, _COLOUR_TYPE[channels], 0, 0, 0))
    if icc:
        _chunk(stream, b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        _chunk(stream, b"eXIf", exif)
    _write_idat(stream, samples.reshape(height, width * channels), channels * samples.dtype.itemsize, threads)
    _chunk(stream, b"IEND", b"")


def _write_idat(stream: BinaryIO, rows: np.ndarray, pixel_bytes: int, threads: int | None) -> None:
    """Filter and deflate the bands on a pool, at most two per thread in flight (bounded memory), and write
    each band's deflate bytes as one IDAT chunk, in order."""
    height, row_bytes = rows.shape[0], rows.shape[1] * rows.dtype.itemsize
    step = -(-BAND_BYTES // row_bytes)
    workers = threads or usable_cores()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="png")
    pending: deque[tuple[Future[tuple[bytes, int, int]], bool, bool]] = deque()  # (band, first, last)
    adler = 1

    def write_next() -> None:
        nonlocal adler
        band, first, last = pending.popleft()
        deflated, band_adler, length = band.result()
        adler = _adler32_combine(adler, band_adler, length)
        header = _ZLIB_HEADER if first else b""
        trailer = struct.pack(">I", adler) if last else b""
        _chunk(stream, b"IDAT", header + deflated + trailer)

    try:
        for start in range(0, height, step):
            stop = min(start + step, height)
            last = stop == height
            pending.append((pool.submit(_band, rows, start, stop, pixel_bytes, last), start == 0, last))
            if len(pending) == 2 * workers:
                write_next()
        while pending:
            write_next()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _band(rows: np.ndarray, start: int, stop: int, pixel_bytes: int, last: bool) -> tuple[bytes, int, int]:
    """Rows start..stop filtered (Average) and deflated: (raw deflate bytes, Adler-32 of the filtered bytes,
    their length). Filtered FILTER_BYTES at a time, so that the temporaries stay in the core's cache."""
    row_bytes = rows.shape[1] * rows.dtype.itemsize
    filtered = np.empty((stop - start, row_bytes + 1), np.uint8)
    filtered[:, 0] = AVERAGE
    above = _bytes(rows[start - 1]) if start else np.zeros(row_bytes, np.uint8)
    step = -(-FILTER_BYTES // row_bytes)
    for first in range(start, stop, step):
        raw = _bytes(rows[first : min(first + step, stop)])
        _average(raw, above, pixel_bytes, filtered[first - start : first - start + len(raw), 1:])
        above = raw[-1]
    data = filtered.data
    deflater = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, 8, zlib.Z_RLE)
    deflated = deflater.compress(data) + deflater.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return deflated, zlib.adler32(data), filtered.size


def _average(raw: np.ndarray, above: np.ndarray, pixel_bytes: int, out: np.ndarray) -> None:
    """PNG filter 3 on rows of bytes: each byte minus the floor of the mean of the unfiltered byte one pixel
    to its left (0 at the row's start) and the one above it (`above` for the first row), modulo 256."""
    prediction = np.empty(raw.shape, np.uint16)
    prediction[0] = above
    prediction[1:] = raw[:-1]
    prediction[:, pixel_bytes:] += raw[:, :-pixel_bytes]
    prediction >>= 1
    np.subtract(raw, prediction, out=out, casting="unsafe")  # uint16 wraps modulo 65536, a multiple of 256


def _bytes(rows: np.ndarray) -> np.ndarray:
    """Samples as PNG stores them (16-bit big-endian), viewed as bytes: rows x bytes per row."""
    if rows.dtype == np.uint16:
        rows = rows.astype(">u2")
    return np.ascontiguousarray(rows).view(np.uint8)


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings joined, from each one's checksum and the second's length: zlib's
    adler32_combine(), which Python's zlib module does not expose. A = 1 + sum of bytes, B = sum of the A
    after each byte, both modulo 65521 (RFC 1950, 8.2)."""
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % _ADLER_BASE
    b = (b1 + b2 + second_length * (a1 - 1)) % _ADLER_BASE
    return (b << 16) | a


def _chunk(stream: BinaryIO, kind: bytes, data: bytes) -> None:
    for part in (struct.pack(">I", len(data)) + kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))):
        _write_all(stream, part)


def _write_all(stream: BinaryIO, data: bytes) -> None:
    """Every byte of `data`: a raw (unbuffered) stream may take only part of it per call."""
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if not written:
            raise OSError(f"the stream took no bytes ({written!r}) of {len(view)}")
        view = view[written:]
