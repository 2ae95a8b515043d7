"""Split an image into tiles, run them in batches through any `run(batch) -> batch` callable, stitch.

Knows nothing about backends. All tiles of an image have one shape: edge tiles are shifted inward so
every tile is full size, and images smaller than the minimum side are padded (symmetric) and cropped back.
Neighbouring tiles overlap; each keeps the part of its output nearest its centre, cut at the middle of the
overlap. Tile origins fall on multiples of `align` (LSANet: 6, the stride of its attention's pooling grid,
so that tiles pool the same windows as the whole image; the image is padded at the bottom and right
where needed and cropped back). The output is assembled directly in the input's integer dtype; only one batch of tiles is ever
held in float32, and the input is converted to float tile by tile.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

Run = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TileConfig:
    """`tile`: the largest LR side one pass may have (an image that fits runs whole, in one pass);
    `overlap`: LR pixels of context each tile gets beyond what it keeps; `align`: tile origins fall on its
    multiples. Tiles are of equal size within an image."""

    tile: int = 512
    overlap: int = 48
    batch: int = 1
    min_side: int = 15
    align: int = 6
    scale: int = 4

    def __post_init__(self) -> None:
        if self.overlap < 0 or self.batch < 1:
            raise ValueError("overlap must be >= 0 and batch >= 1")
        smallest = max(self.min_side, 2 * self.overlap + self.align)
        if self.tile < smallest:
            raise ValueError(f"tile {self.tile} must be >= {smallest} (min side, and 2 x overlap + {self.align})")


@dataclass(frozen=True)
class Span:
    """One tile along one axis: it reads [start, start + size) and keeps [keep_from, keep_to)."""

    start: int
    keep_from: int
    keep_to: int


@dataclass(frozen=True)
class Axis:
    """How one axis is cut: its padded length, the tile length, and the tiles."""

    length: int
    tile: int
    spans: list[Span]


def split_axis(length: int, max_tile: int, overlap: int, align: int = 1) -> Axis:
    """The fewest equal tiles of at most `max_tile` that cover `length` with `overlap` of context each side.

    Tile origins are multiples of `align`; the axis is padded (at its end) so that the last one is too.
    Each tile keeps what lies between the midpoints of its overlaps with its neighbours.
    """
    if length <= max_tile:
        return Axis(length, length, [Span(0, 0, length)])
    count = 2
    while True:
        # Origins rounded down to `align` can come up to align - 1 closer than the even spacing.
        tile = -(-(length + (count - 1) * (2 * overlap + align)) // count)
        if tile <= max_tile:
            break
        count += 1
    padded = length + (-(length - tile)) % align
    last = padded - tile
    starts = [i * last // (count - 1) // align * align for i in range(count - 1)] + [last]
    cuts = [0] + [(nxt + prev + tile) // 2 for prev, nxt in zip(starts, starts[1:])] + [padded]
    return Axis(padded, tile, [Span(st, cuts[i], cuts[i + 1]) for i, st in enumerate(starts)])


@dataclass(frozen=True)
class Tile:
    y: Span
    x: Span


@dataclass(frozen=True)
class Plan:
    """The padded image size, the one tile shape, and the tiles."""

    height: int
    width: int
    tile_height: int
    tile_width: int
    tiles: list[Tile]


def plan(height: int, width: int, config: TileConfig) -> Plan:
    """How an image of height x width LR pixels is padded and cut."""
    height, width = max(height, config.min_side), max(width, config.min_side)
    ys = split_axis(height, config.tile, config.overlap, config.align)
    xs = split_axis(width, config.tile, config.overlap, config.align)
    return Plan(ys.length, xs.length, ys.tile, xs.tile, [Tile(y, x) for y in ys.spans for x in xs.spans])


def _pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    return np.pad(image, [(0, height - h), (0, width - w), (0, 0)], mode="symmetric")


def _batches(items: list[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def upscale(
    image: np.ndarray,
    run: Run,
    config: TileConfig,
    rerun_fp32: Run | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Upscale an H x W x 3 uint8/uint16 RGB image; returns sH x sW x 3 of the same dtype.

    A MemoryError from `run` halves the tile and starts the image again. A tile whose output holds NaN/Inf
    is rerun through `rerun_fp32` (with a warning) when given; NaN/Inf that remains is an error.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an H x W x 3 uint8 or uint16 image, got {image.shape} {image.dtype}")
    while True:
        try:
            return _upscale_once(image, run, config, rerun_fp32, progress)
        except MemoryError:
            smaller = config.tile // 2
            if smaller < max(config.min_side, 2 * config.overlap + 1):
                raise
            warnings.warn(f"out of memory at tile {config.tile}; retrying with tile {smaller}", stacklevel=2)
            config = TileConfig(smaller, config.overlap, config.batch, config.min_side, config.align, config.scale)


def count_tiles(height: int, width: int, config: TileConfig) -> int:
    """How many tiles `upscale` will run for an image of this size (for progress bars)."""
    return len(plan(height, width, config).tiles)


def _upscale_once(image, run, config, rerun_fp32, progress) -> np.ndarray:
    h, w = image.shape[:2]
    s = config.scale
    peak = float(np.iinfo(image.dtype).max)
    layout = plan(h, w, config)
    padded = _pad(image, layout.height, layout.width)
    th, tw = layout.tile_height, layout.tile_width
    out = np.empty((h * s, w * s, 3), dtype=image.dtype)
    for group in _batches(layout.tiles, config.batch):
        batch = np.empty((len(group), 3, th, tw), np.float32)
        for i, t in enumerate(group):
            patch = padded[t.y.start : t.y.start + th, t.x.start : t.x.start + tw]
            np.multiply(patch.transpose(2, 0, 1), 1.0 / peak, out=batch[i], casting="unsafe")
        result = run(batch)
        bad = ~np.isfinite(result).all(axis=(1, 2, 3))
        if bad.any() and rerun_fp32 is not None:
            warnings.warn(f"{int(bad.sum())} tile(s) came back with NaN/Inf; rerunning them in FP32", stacklevel=3)
            result[bad] = rerun_fp32(batch[bad])
            bad = ~np.isfinite(result).all(axis=(1, 2, 3))
        if bad.any():
            raise FloatingPointError(f"{int(bad.sum())} tile(s) came back with NaN/Inf and no FP32 rerun is available")
        for i, t in enumerate(group):
            y0, y1 = min(t.y.keep_from, h), min(t.y.keep_to, h)
            x0, x1 = min(t.x.keep_from, w), min(t.x.keep_to, w)
            if y1 <= y0 or x1 <= x0:
                continue
            kept = result[i, :, (y0 - t.y.start) * s : (y1 - t.y.start) * s, (x0 - t.x.start) * s : (x1 - t.x.start) * s]
            np.clip(kept, 0.0, 1.0, out=kept)
            kept *= peak
            np.rint(kept, out=kept)
            out[y0 * s : y1 * s, x0 * s : x1 * s] = kept.transpose(1, 2, 0)
        if progress is not None:
            progress(len(group))
    return out
