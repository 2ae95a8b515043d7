"""Host work per tile: everything the runtime does around the network for one tile (slicing and converting
the input tile to float32 NCHW, the NaN/Inf check, clamp, scale, round and the HWC uint8 copy into the
result), measured with an instant stand-in network, so that the figure is what would keep a GPU waiting.
A 256x256 FP16 tile takes about 3 ms on an RTX GPU: host work above that leaves the GPU idle.

    python -m bench.host_work [--side 2048] [--rounds 5]

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

from runtime.tiling import TileConfig, count_tiles, upscale


def stand_in(outputs: dict[tuple[int, ...], np.ndarray]):
    """An instant network: returns a preallocated x4 float32 output of the right shape (values in [0, 1])."""

    def run(batch: np.ndarray) -> np.ndarray:
        n, c, h, w = batch.shape
        key = (n, c, h * 4, w * 4)
        if key not in outputs:
            outputs[key] = np.random.default_rng(0).random(key, dtype=np.float32)
        return outputs[key].copy()  # a real backend hands back a fresh array too

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    image = cv2.resize(data.astronaut(), (args.side, args.side), interpolation=cv2.INTER_CUBIC)
    outputs: dict[tuple[int, ...], np.ndarray] = {}
    run = stand_in(outputs)
    print(f"{args.side}x{args.side} 8-bit RGB, instant stand-in network, median of {args.rounds} rounds\n")
    print("| tile budget | tiles | ms of host work per tile |\n|---|---|---|")
    for tile in (256, 512):
        config = TileConfig(tile=tile)
        tiles = count_tiles(args.side, args.side, config)
        upscale(image, run, config)  # warm-up: allocations, the stand-in's outputs
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            upscale(image, run, config)
            times.append(time.perf_counter() - start)
        print(f"| {tile} | {tiles} | {statistics.median(times) / tiles * 1e3:.2f} |")


if __name__ == "__main__":
    main()
