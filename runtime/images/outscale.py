"""Results at any scale (`--outscale S`, as Real-ESRGAN's): the network's x4 result resized to S times the
input, with OpenCV's area filter when it shrinks (every x4 pixel counted, no aliasing) and Lanczos-4 when
it enlarges. Alpha keeps its rule (runtime/images/alpha.py): a constant plane stays that constant (the
filters keep a constant), a binary plane stays binary (thresholded at half again after the resize)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from core.descriptor import SCALE
from runtime.images.io import Image, scaled_size


def check_outscale(scale: float) -> None:
    """ValueError unless `scale` is a usable --outscale: above 0, at most 16 (4x the network's own)."""
    if not 0 < scale <= 16:
        raise ValueError(f"must be above 0 and at most 16, got {scale:g}")


def resize_result(result: Image, source_width: int, source_height: int, scale: float) -> Image:
    """`result` (the x4 of a `source_width` x `source_height` image) at `scale` times the source's size,
    marked for that scale; the x4 result itself, unchanged, for scale 4."""
    if scale == SCALE:
        return result
    size = scaled_size(source_width, source_height, scale)
    method = cv2.INTER_AREA if scale < SCALE else cv2.INTER_LANCZOS4
    colour = cv2.resize(result.colour, size, interpolation=method)
    alpha = None
    if result.alpha is not None:
        top = np.iinfo(result.alpha.dtype).max
        binary = bool(np.all((result.alpha == 0) | (result.alpha == top)))
        alpha = cv2.resize(result.alpha, size, interpolation=method)
        if binary:
            alpha = np.where(alpha >= (top + 1) // 2, top, 0).astype(result.alpha.dtype)
    return dataclasses.replace(result, colour=colour, alpha=alpha, outscale=scale)
