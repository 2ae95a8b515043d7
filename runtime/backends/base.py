"""The one small interface every backend shares (after Polygraphy's runners).

`activate()` allocates sessions and buffers, `infer(batch)` checks a float batch once and calls the
backend's `infer_impl`, `infer_pixels(tiles)` does the same for integer image tiles through the pixel
boundary of core/boundary.py (on the host, or in the backend's graph where it overrides `pixels_impl`),
`deactivate()` frees; a backend is also a context manager. Out-of-memory is
reported as MemoryError (the tiler then halves its tiles), whatever the backend's own exception was.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from core.boundary import from_model, to_model
from core.descriptor import MIN_SIZE
from core.errors import BackendError


class BackendOutOfMemory(MemoryError):
    """The device or host ran out of memory for this batch."""


@dataclass(frozen=True)
class Limits:
    """The input shapes a backend accepts: sides in [min_side, max_side], batch up to max_batch; `fixed_shape`:
    it runs best on one shape (TensorRT specialises kernels per input shape, a CUDA graph replays one), so
    the tiler pads every tile to one square size; `concurrent`: calls it runs at once, from as many threads
    (a TensorRT engine's lanes), so the tiler keeps that many batches in flight."""

    min_side: int = MIN_SIZE
    max_side: int | None = None
    max_batch: int | None = None
    fixed_shape: bool = False
    concurrent: int = 1


class Backend(ABC):
    """Runs LSANet on N x 3 x H x W float32 RGB batches in [0, 1], returning N x 3 x 4H x 4W float32."""

    name: str = "backend"

    def __init__(self) -> None:
        self.active = False

    @property
    def limits(self) -> Limits:
        return Limits()

    @property
    def precision(self) -> str:
        return "fp32"

    @property
    def converts_pixels(self) -> bool:
        """Whether 8-bit tiles are converted by the backend itself (in its graph or on its device) rather
        than by the host form around `infer_impl`."""
        return False

    def describe(self) -> str:
        return f"{self.name} ({self.precision})"

    def activate(self) -> None:
        """Load. A load that fails part way is released before its error goes on: a session or buffers it
        had made would otherwise live as long as the discarded backend (auto tries several, and the FP32
        rerun backend stays referenced)."""
        if self.active:
            return
        try:
            self.activate_impl()
        except BaseException:
            try:
                self.deactivate_impl()
            except Exception as released:  # noqa: BLE001 - the activation's own error is the one to report
                warnings.warn(f"{self.name}: releasing a failed load failed too: {released}", stacklevel=2)
            raise
        self.active = True

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
            self.active = False

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Check the batch against the interface and the backend's limits, then run it."""
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"{self.name}: expected an N x 3 x H x W float32 batch, got {batch.shape} {batch.dtype}")
        self._check(*batch.shape[:1], *batch.shape[2:])
        return self.infer_impl(np.ascontiguousarray(batch))

    def infer_pixels(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N x H x W x 3 uint8/uint16 image tiles -> (N x 4H x 4W x 3 of the same dtype, N flags: the tile's
        float output held NaN/Inf, so its pixels are meaningless)."""
        if tiles.dtype not in (np.uint8, np.uint16) or tiles.ndim != 4 or tiles.shape[3] != 3:
            raise ValueError(f"{self.name}: expected N x H x W x 3 uint8/uint16 tiles, got {tiles.shape} {tiles.dtype}")
        self._check(*tiles.shape[:3])
        return self.pixels_impl(np.ascontiguousarray(tiles))

    def _check(self, n: int, h: int, w: int) -> None:
        if not self.active:
            raise BackendError(f"{self.name}: infer() before activate()")
        limits = self.limits
        if min(h, w) < limits.min_side or (limits.max_side is not None and max(h, w) > limits.max_side):
            raise ValueError(f"{self.name}: {h}x{w} is outside the sides this backend accepts ({limits})")
        if limits.max_batch is not None and n > limits.max_batch:
            raise ValueError(f"{self.name}: batch {n} exceeds {limits.max_batch}")

    def pixels_impl(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pixel boundary on the host around `infer_impl`; a backend that converts inside its graph
        overrides this for the tiles it can (8-bit) and calls it for the rest."""
        return from_model(self.infer_impl(to_model(tiles)), tiles.dtype)

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, batch: np.ndarray) -> np.ndarray: ...

    def deactivate_impl(self) -> None:
        """Drop sessions and buffers; most backends just let go of their references. Also called after a
        failed `activate_impl`, so it must accept whatever part of the state exists."""
