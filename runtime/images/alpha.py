"""Upscale an alpha plane so that what is certain in it stays certain.

The network upscales alpha like any grey image, which rings at edges: a fully opaque image came back with
alpha 242-254 on its border, and fully transparent areas gained alpha up to 26. The rule:

- constant plane (every pixel the same value: fully opaque, fully transparent, or any single level):
  the result is exactly that constant; the network is not run.
- binary plane (only 0 and the dtype's maximum, e.g. a cut-out mask): the network's upscale, thresholded
  at half the maximum, so it stays binary; the edge follows the network's sharp upscale rather than the
  blocks of nearest-neighbour.
- anything else (soft edges, gradients): the network's upscale as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.descriptor import SCALE


def needs_network(alpha: np.ndarray) -> bool:
    """Whether `upscale_alpha` runs the network on this plane: not for a constant one (for progress counts)."""
    return not np.all(alpha == alpha.flat[0])


def upscale_alpha(alpha: np.ndarray, upscale_grey: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """x4 an H x W alpha plane by the rule above; `upscale_grey` runs the network on a grey plane of the
    same dtype and returns it x4."""
    if not needs_network(alpha):
        return np.full((alpha.shape[0] * SCALE, alpha.shape[1] * SCALE), alpha.flat[0], alpha.dtype)
    top = np.iinfo(alpha.dtype).max
    upscaled = upscale_grey(alpha)
    if np.all((alpha == 0) | (alpha == top)):
        return np.where(upscaled >= (top + 1) // 2, top, 0).astype(alpha.dtype)
    return upscaled
