"""The alpha rule: constant planes stay exactly constant (no network pass), binary planes stay binary, soft
alpha is the network's upscale. The stand-in network is bicubic, which rings at edges as the real one does."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.images.alpha import needs_network, upscale_alpha


def bicubic_x4(plane: np.ndarray) -> np.ndarray:
    return cv2.resize(plane, (plane.shape[1] * 4, plane.shape[0] * 4), interpolation=cv2.INTER_CUBIC)


def never_called(_plane: np.ndarray) -> np.ndarray:
    raise AssertionError("a constant alpha plane must not go through the network")


@pytest.mark.parametrize(
    ("dtype", "value"), [(np.uint8, 255), (np.uint8, 0), (np.uint8, 77), (np.uint16, 65535), (np.uint16, 0)]
)
def test_constant_alpha_stays_exactly_constant(dtype, value: int) -> None:
    alpha = np.full((7, 11), value, dtype)
    assert not needs_network(alpha)
    result = upscale_alpha(alpha, never_called)
    assert result.shape == (28, 44) and result.dtype == dtype
    assert np.all(result == value)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_binary_alpha_stays_binary(dtype) -> None:
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[:24, :32]
    alpha = np.where((yy - 12) ** 2 + (xx - 16) ** 2 < 60, top, 0).astype(dtype)  # a disc cut-out
    assert needs_network(alpha)
    smooth = bicubic_x4(alpha)
    assert len(np.unique(smooth)) > 2  # the stand-in network rings, as the real one does
    result = upscale_alpha(alpha, bicubic_x4)
    assert result.shape == (96, 128) and result.dtype == dtype
    assert set(np.unique(result)) == {0, top}
    assert np.array_equal(result == top, smooth >= (top + 1) // 2)  # the edge follows the upscale


def test_soft_alpha_is_the_network_upscale() -> None:
    alpha = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (10, 1))
    assert np.array_equal(upscale_alpha(alpha, bicubic_x4), bicubic_x4(alpha))
