"""Split an image into tiles, run them in batches through any `run(tiles) -> (tiles, nonfinite)` callable,
stitch.

Knows nothing about backends. An image that fits the pixel budget runs whole, in one pass. Otherwise it is
cut into a grid of equal, overlapping tiles (the grid that runs the fewest pixels within the budget); each
tile keeps the part of its output nearest its centre, cut at the middle of the overlap. Tile origins fall
on multiples of `align` (LSANet: 6, the stride of its attention's pooling grid, so that tiles pool the
same windows as the whole image). Images smaller than the minimum side, or whose last tile needs it, are
padded (symmetric) at the bottom and right and cropped back. Tiles go out and come back in the image's
integer dtype (the conversion to and from the network's floats is the backend's: core/boundary.py); the kept
rectangle of each is copied straight into the output. `in_flight` batches run at once where `run` allows it
(a GPU backend with two lanes): the next batch is cut and handed over while earlier ones run, so the host's
work overlaps the device's.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import numpy as np

from core.descriptor import LSANET

# N x h x w x 3 tiles -> (N x sh x sw x 3 tiles of the same dtype, N flags: that tile's output held NaN/Inf)
Run = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TileConfig:
    """`tile`: one pass holds at most tile x tile LR pixels (the memory budget; an image that fits runs
    whole); `max_side`: the longest side a pass may have (a TensorRT profile's limit; None = any);
    `overlap`: LR pixels of context each tile gets beyond what it keeps; `align`: tile origins fall on its
    multiples; `fixed`: every tile is tile x tile (max_side at most), the image padded up where it is
    smaller, so that all images run one input shape. Tiles are of equal shape within an image.
    `in_flight`: batches handed to `run` at once, from as many threads; more than 1 only for a `run` that
    may be called concurrently (runtime/backends/base.py Limits.concurrent)."""

    tile: int = 512
    overlap: int = 16
    batch: int = 1
    min_side: int = LSANET.min_side
    max_side: int | None = None
    align: int = LSANET.align
    scale: int = LSANET.scale
    fixed: bool = False
    in_flight: int = 1

    def __post_init__(self) -> None:
        if self.overlap < 0 or self.batch < 1 or self.in_flight < 1:
            raise ValueError("overlap must be >= 0, batch and in_flight >= 1")
        if min(self.tile, self.max_side or self.tile) < self.smallest_tile:
            raise ValueError(
                f"tile {self.tile} must be >= {self.smallest_tile} (min side, and 2 x overlap + {self.align + 1})"
            )

    @property
    def smallest_tile(self) -> int:
        return max(self.min_side, 2 * self.overlap + self.align + 1)


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


def tile_length(length: int, count: int, overlap: int, align: int = 1) -> int:
    """The length of `count` equal tiles covering `length` with `overlap` of context each side.

    Origins rounded down to `align` can come up to align - 1 closer than even spacing; that is allowed for.
    """
    if count == 1:
        return length
    return -(-(length + (count - 1) * (2 * overlap + align)) // count)


def split_axis(length: int, count: int, overlap: int, align: int = 1, tile: int | None = None) -> Axis:
    """`count` equal tiles over `length`, origins on multiples of `align` (the axis is padded at its end so
    that the last one is too); each tile keeps what lies between the midpoints of its overlaps. `tile`: a
    longer tile than the shortest that would do (a fixed shape), the axis padded up to it if shorter."""
    tile = max(tile or 0, tile_length(length, count, overlap, align))
    if count == 1:
        return Axis(tile, tile, [Span(0, 0, tile)])
    padded = length + (-(length - tile)) % align
    last = padded - tile
    starts = [i * last // (count - 1) // align * align for i in range(count - 1)] + [last]
    cuts = [0] + [(nxt + prev + tile) // 2 for prev, nxt in zip(starts, starts[1:])] + [padded]
    return Axis(padded, tile, [Span(st, cuts[i], cuts[i + 1]) for i, st in enumerate(starts)])


def _fewest(length: int, limit: int, overlap: int, align: int) -> int | None:
    """The fewest tiles whose length is at most `limit`, or None if none can be that short."""
    if limit >= length:
        return 1
    if limit < 2 * overlap + align + 1:
        return None
    count = 2
    while tile_length(length, count, overlap, align) > limit:
        count += 1
    return count


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
    """How an image of height x width LR pixels is padded and cut: of all grids whose tiles hold at most
    tile x tile pixels and max_side per side, the one that runs the fewest pixels (then the fewest tiles)."""
    height, width = max(height, config.min_side), max(width, config.min_side)
    if config.fixed:
        side = min(config.tile, config.max_side or config.tile)
        rows, cols = (_fewest(n, side, config.overlap, config.align) for n in (height, width))
        ys = split_axis(height, rows, config.overlap, config.align, side)
        xs = split_axis(width, cols, config.overlap, config.align, side)
        return Plan(ys.length, xs.length, ys.tile, xs.tile, [Tile(y, x) for y in ys.spans for x in xs.spans])
    budget, side = config.tile * config.tile, config.max_side or max(height, width)
    best: tuple[int, int, int, int] | None = None
    for rows in range(1, height + 1):
        tile_h = tile_length(height, rows, config.overlap, config.align)
        if tile_h > side:
            continue
        cols = _fewest(width, min(side, budget // tile_h), config.overlap, config.align)
        if cols is not None:
            cost = rows * cols * tile_h * tile_length(width, cols, config.overlap, config.align)
            if best is None or (cost, rows * cols) < (best[0], best[1] * best[2]):
                best = (cost, rows, cols, tile_h)
        # Thinner rows only add overlap: stop once they are well below a square tile and a grid was found.
        if tile_h < config.smallest_tile or (best is not None and 4 * tile_h < config.tile):
            break
    if best is None:
        raise ValueError(f"no tiling of {height}x{width} fits tile {config.tile} and max side {config.max_side}")
    ys = split_axis(height, best[1], config.overlap, config.align)
    xs = split_axis(width, best[2], config.overlap, config.align)
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

    A MemoryError from `run` halves the tile and starts the image again; the output is allocated once,
    before that, so an output too large for memory is reported as such, not as a tile problem. A tile whose output holds NaN/Inf
    is rerun through `rerun_fp32` (with a warning) when given; NaN/Inf that remains is an error.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an H x W x 3 uint8 or uint16 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    try:
        out = np.empty((h * config.scale, w * config.scale, 3), dtype=image.dtype)
    except MemoryError:
        sh, sw = h * config.scale, w * config.scale
        size = sh * sw * 3 * image.dtype.itemsize / 2**30
        raise MemoryError(f"the x{config.scale} result ({sw}x{sh}, {size:.1f} GiB) does not fit in memory") from None
    while True:
        try:
            return _upscale_once(image, run, config, out, rerun_fp32, progress)
        except MemoryError:
            smaller = config.tile // 2
            if smaller < config.smallest_tile:
                raise
            warnings.warn(f"out of memory at tile {config.tile}; retrying with tile {smaller}", stacklevel=2)
            config = replace(config, tile=smaller, max_side=min(config.max_side or smaller, smaller))


def count_tiles(height: int, width: int, config: TileConfig) -> int:
    """How many tiles `upscale` will run for an image of this size (for progress bars)."""
    return len(plan(height, width, config).tiles)


class _Done:
    """A call already made in this thread, answering the pool's future's `result()` and `cancel()`. An error
    is not stored: it leaves `run` at once, as without a pool (a stored one would hold the failed pass's
    arrays in a reference cycle until the garbage collector runs, against tests/test_oom.py's memory limit)."""

    def __init__(self, value: tuple[np.ndarray, np.ndarray]) -> None:
        self._value = value

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self._value

    def cancel(self) -> bool:
        return False


def _run_here(run: Run, batch: np.ndarray) -> _Done:
    return _Done(run(batch))


def _upscale_once(image, run, config, out, rerun_fp32, progress) -> np.ndarray:
    h, w = image.shape[:2]
    s = config.scale
    layout = plan(h, w, config)
    padded = _pad(image, layout.height, layout.width)
    th, tw = layout.tile_height, layout.tile_width

    def keep(group: list[Tile], batch: np.ndarray, result: np.ndarray, bad: np.ndarray) -> None:
        if bad.any() and rerun_fp32 is not None:
            warnings.warn(f"{int(bad.sum())} tile(s) came back with NaN/Inf; rerunning them in FP32", stacklevel=5)
            result[bad], bad[bad] = rerun_fp32(batch[bad])
        if bad.any():
            raise FloatingPointError(f"{int(bad.sum())} tile(s) came back with NaN/Inf and no FP32 rerun is available")
        for i, t in enumerate(group):
            y0, y1 = min(t.y.keep_from, h), min(t.y.keep_to, h)
            x0, x1 = min(t.x.keep_from, w), min(t.x.keep_to, w)
            if y1 > y0 and x1 > x0:
                kept = result[i, (y0 - t.y.start) * s : (y1 - t.y.start) * s, (x0 - t.x.start) * s : (x1 - t.x.start) * s]
                out[y0 * s : y1 * s, x0 * s : x1 * s] = kept
        if progress is not None:
            progress(len(group))

    # With in_flight > 1, batches run in worker threads, at most that many at once; results are kept in order,
    # in this thread (the FP32 rerun too). Leaving early (an error, a signal) settles what is pending first
    # (_settle). With 1, each batch runs here: a worker thread's stack and malloc arena would count against
    # the process's memory limits for nothing (tests/test_oom.py).
    pending: deque = deque()
    pool = ThreadPoolExecutor(config.in_flight, thread_name_prefix="tile") if config.in_flight > 1 else None
    submit = pool.submit if pool is not None else _run_here

    def collect() -> None:
        group, batch, future = pending.popleft()
        try:
            result = future.result()
        finally:
            del future  # else its stored error refers to this frame, which refers to it: a cycle holding the tiles
        keep(group, batch, *result)

    try:
        for group in _batches(layout.tiles, config.batch):
            batch = np.stack([padded[t.y.start : t.y.start + th, t.x.start : t.x.start + tw] for t in group])
            pending.append((group, batch, submit(run, batch)))
            if len(pending) == config.in_flight:
                collect()
        while pending:
            collect()
    except BaseException:
        if pool is not None:
            _settle([future for *_, future in pending])
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=False)  # its workers are idle by now: every batch was collected or settled
    return out


def _settle(futures: list) -> None:
    """Return once none of `futures` runs: those not started are cancelled, those running waited for. The
    caller may release the backend next, which must not happen under a running batch, so a signal that
    interrupts the wait (a second Ctrl-C) only makes it wait again; the error already on its way is then
    raised. (Not the pool's Thread.join(), which a signal cuts short: bpo-45274, runtime/jobs/channel.py; and
    not core/signals.py interrupts_deferred, which holds signals only under the command's own handler, while
    a library caller's Ctrl-C is Python's KeyboardInterrupt.)"""
    for future in futures:
        future.cancel()
    while True:
        try:
            wait(futures)
            return
        except BaseException:  # noqa: BLE001 - a signal's exception while waiting: the batches still run
            continue
