"""Image comparison figures used by the parity gate, the tests and the benchmarks (numpy only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; infinite for identical arrays."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr luma of an H x W x 3 RGB array in 0..255, as float64 (SR benchmark convention)."""
    rgb = np.asarray(rgb, np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def y_psnr(sr: np.ndarray, hr: np.ndarray, border: int = 4) -> float:
    """Y-PSNR of two H x W x 3 RGB uint8 images with `border` pixels cropped (Set5 reference convention)."""
    crop = (slice(border, -border or None), slice(border, -border or None))
    return psnr(y_channel(sr)[crop], y_channel(hr)[crop], peak=255.0)


@dataclass(frozen=True)
class Comparison:
    """How far `test` is from `reference`, both float images nominally in [0, 1]."""

    max_abs: float
    psnr: float
    nonfinite: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare(reference: np.ndarray, test: np.ndarray) -> Comparison:
    """Max abs error, PSNR (peak 1) and NaN/Inf count of `test` against `reference`."""
    test = np.asarray(test, np.float64)
    reference = np.asarray(reference, np.float64)
    finite = np.isfinite(test)
    nonfinite = int(test.size - finite.sum())
    if nonfinite:
        return Comparison(max_abs=float("inf"), psnr=float("-inf"), nonfinite=nonfinite)
    return Comparison(max_abs=float(np.abs(test - reference).max()), psnr=psnr(reference, test), nonfinite=0)
