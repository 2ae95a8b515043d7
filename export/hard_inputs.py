"""Inputs the project makes itself, in [0, 1], that stress FP16: noise, flat and saturated fields, edges.

They let the parity gate run on any machine, with or without real photos at hand.
"""

from __future__ import annotations

import numpy as np

SATURATED = {
    "red": (1, 0, 0),
    "green": (0, 1, 0),
    "blue": (0, 0, 1),
    "yellow": (1, 1, 0),
    "magenta": (1, 0, 1),
    "cyan": (0, 1, 1),
}


def _flat(rgb: tuple[float, float, float], size: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32).reshape(1, 3, 1, 1), (1, 3, size, size)).copy()


def _colour_bars(size: int) -> np.ndarray:
    colours = [(1, 1, 1), *SATURATED.values(), (0, 0, 0)]
    columns = np.arange(size) * len(colours) // size
    bars = np.asarray(colours, np.float32)[columns].T
    return np.ascontiguousarray(np.broadcast_to(bars[:, None, :], (3, size, size))[None])


def hard_inputs(size: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Named 1 x 3 x size x size float32 inputs (size >= 15)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    checker = ((yy + xx) % 2).astype(np.float32)
    ramp = (xx / (size - 1)).astype(np.float32)
    inputs = {
        "uniform-noise": rng.random((1, 3, size, size), dtype=np.float32),
        "binary-noise": (rng.random((1, 3, size, size)) < 0.5).astype(np.float32),
        "checkerboard": np.broadcast_to(checker, (1, 3, size, size)).copy(),
        "white": _flat((1, 1, 1), size),
        "black": _flat((0, 0, 0), size),
        "colour-bars": _colour_bars(size),
        "ramp": np.broadcast_to(ramp, (1, 3, size, size)).copy(),
    }
    inputs.update({f"flat-{name}": _flat(rgb, size) for name, rgb in SATURATED.items()})
    return inputs
