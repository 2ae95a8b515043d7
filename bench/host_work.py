"""Host work per tile: everything the runtime does in Python around the network for one tile, measured with
an instant stand-in network, so that the figure is what would keep a GPU waiting. A 256x256 FP16 tile
takes about 3 ms on an RTX GPU: host work above that leaves the GPU idle.

    python -m bench.host_work [--side 2048] [--rounds 5]

Three boundaries (core/boundary.py), side by side:
- "graph": the 8-bit path of ONNX Runtime CUDA and PyTorch: bytes in and out, the conversion inside the
  backend (so not here); the host slices tiles and copies each kept rectangle into the result;
- "engine": a TensorRT engine with pixel outputs: the host writes the float32 NCHW input into a reused
  buffer (the pinned one), bytes come back;
- "host": the float path (16-bit images, the CPU backends, engines of earlier exports): the host also
  converts each tile to float32 NCHW, and back (NaN/Inf count, scale, clamp, round, interleave).
Prints the median over rounds of ms per tile for tiles of 256 and of the default 512, on an 8-bit RGB
image of side x side LR pixels (a real photo, resized). One core is used by numpy here, as on a user's
machine while the GPU works.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from skimage import data

from core.boundary import from_model, to_model
from runtime.tiling import TileConfig, count_tiles, upscale


def graph_stand_in(outputs: dict[tuple[int, ...], np.ndarray]):
    """An instant network with the boundary in its graph: preallocated x4 uint8 tiles, no NaN."""

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, h, w, c = tiles.shape
        key = (n, h * 4, w * 4, c)
        if key not in outputs:
            outputs[key] = np.random.default_rng(0).integers(0, 256, key, dtype=np.uint8)
        return outputs[key].copy(), np.zeros(n, bool)  # a real backend hands back fresh arrays too

    return run


def engine_stand_in(outputs: dict[tuple[int, ...], np.ndarray]):
    """An instant engine with pixel outputs: float input written by the host into a reused buffer, x4 uint8
    tiles back, no NaN."""
    inputs: dict[tuple[int, ...], np.ndarray] = {}
    graph = graph_stand_in(outputs)

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, h, w, _ = tiles.shape
        to_model(tiles, out=inputs.setdefault((n, h, w), np.empty((n, 3, h, w), np.float32)))
        return graph(tiles)

    return run


def host_stand_in(outputs: dict[tuple[int, ...], np.ndarray]):
    """An instant float network (values in [0, 1]) with the boundary converted on the host."""

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, c, h, w = (batch := to_model(tiles)).shape
        key = (n, c, h * 4, w * 4)
        if key not in outputs:
            outputs[key] = np.random.default_rng(0).random(key, dtype=np.float32)
        return from_model(outputs[key].copy(), tiles.dtype)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    image = cv2.resize(data.astronaut(), (args.side, args.side), interpolation=cv2.INTER_CUBIC)
    runs = {"graph": graph_stand_in({}), "engine": engine_stand_in({}), "host": host_stand_in({})}
    print(f"{args.side}x{args.side} 8-bit RGB, instant stand-in network, median of {args.rounds} rounds\n")
    print("| tile budget | tiles | boundary | ms of host work per tile |\n|---|---|---|---|")
    for tile in (256, 512):
        config = TileConfig(tile=tile)
        tiles = count_tiles(args.side, args.side, config)
        for name, run in runs.items():
            upscale(image, run, config)  # warm-up: allocations, the stand-in's outputs
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                upscale(image, run, config)
                times.append(time.perf_counter() - start)
            print(f"| {tile} | {tiles} | {name} | {statistics.median(times) / tiles * 1e3:.2f} |")

if __name__ == "__main__":
    main()
