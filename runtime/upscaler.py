"""The runtime as a library: `Upscaler` loads a model once, chooses and self-checks a backend, and upscales
numpy images or files. upscale.py, a Ray actor or a video loop all use it the same way.

    >>> from runtime import Upscaler
    >>> with Upscaler(backend="auto", tile=512) as up:          # doctest: +SKIP
    ...     out = up(image)                                     # H x W x C uint8/uint16, RGB(A) order
    ...     up.upscale_file("in.png", "out.png")
    ...     print(up.backend, up.reason)

Thread safety: calls may come from several threads; they are serialised (one inference at a time per
Upscaler), since a backend's session and buffers are not shared safely. For parallel work make one
Upscaler per worker (a Ray actor each, say).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export.errors import DeployError
from runtime.imageio import DEFAULT_MAX_PIXELS, Image, read_image, write_image
from runtime.job import check_fits, check_output, upscale_image
from runtime.selection import choose_backend, resolve_model, self_check, tile_config


class Upscaler:
    """x4 images with LSANet through the fastest backend that loads here and passes its self-check.

    Arguments mean what upscale.py's options mean: `backend` ("auto" or a name), `precision` ("fp16",
    "fp32" or None for the backend's default), `tile` (pixel budget of one pass; 0 = as large as memory
    allows), `overlap`, and the model: `ckpt`, `onnx`, `engine`, or the manifest in `engines_dir` (default:
    the first of $LSANET_ENGINES, ./engines, this project's engines/, the user cache that holds one).
    """

    def __init__(
        self,
        backend: str = "auto",
        precision: str | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        *,
        ckpt: str | Path | None = None,
        onnx: str | Path | None = None,
        engine: str | Path | None = None,
        engines_dir: str | Path | None = None,
        key: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        as_path = lambda p: None if p is None else Path(p)  # noqa: E731
        self.model = resolve_model(as_path(ckpt), as_path(onnx), as_path(engine), as_path(engines_dir), key)
        self._choice = choose_backend(backend, self.model, precision)
        self._backend, self._rerun = self._choice.backend, self._choice.fallback
        try:
            self.config = tile_config(self._backend, tile, overlap)
        except DeployError:
            self._backend.deactivate()
            raise
        self.max_pixels = max_pixels
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """The backend in use, e.g. 'openvino (fp32)'."""
        return self._backend.describe()

    @property
    def reason(self) -> str:
        """Why that backend was chosen."""
        return self._choice.reason

    @property
    def skipped(self) -> list[str]:
        """Better-ranked backends passed over, each with its reason."""
        return list(self._choice.skipped)

    def _rerun_fp32(self, batch: np.ndarray) -> np.ndarray:
        """The FP32 fallback for NaN/Inf tiles, loaded and self-checked on first use."""
        if not self._rerun.active:
            self._rerun.activate()
            self_check(self._rerun, self.model)
        return self._rerun.infer(batch)

    def upscale_image(
        self, image: Image, progress: Callable[[int], None] | None = None, name: str | Path = "<image>"
    ) -> Image:
        """x4 an `Image` (colour, grey, alpha, metadata as read by runtime.imageio); an ImageError naming
        `name` before any work when the result would not fit in the memory available."""
        if not self._backend.active:
            raise DeployError("this Upscaler is closed")
        check_fits(image, Path(name))
        with self._lock:
            rerun = self._rerun_fp32 if self._rerun is not None else None
            return upscale_image(image, self._backend.infer, self.config, rerun, progress)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """x4 an H x W (grey), H x W x 1, x 2 (grey + alpha), x 3 (RGB) or x 4 (RGBA) uint8/uint16 array."""
        pixels = np.asarray(pixels)
        channels = 1 if pixels.ndim == 2 else (pixels.shape[2] if pixels.ndim == 3 else 0)
        if pixels.dtype not in (np.uint8, np.uint16) or channels not in (1, 2, 3, 4):
            raise ValueError(f"expected an H x W [x 1-4] uint8 or uint16 image, got {pixels.shape} {pixels.dtype}")
        planes = pixels if pixels.ndim == 3 else pixels[..., None]
        colour = planes[..., 0] if channels <= 2 else planes[..., :3]
        alpha = planes[..., channels - 1] if channels in (2, 4) else None
        image = Image(np.ascontiguousarray(colour), None if alpha is None else np.ascontiguousarray(alpha))
        result = self.upscale_image(image, name="<array>")
        out = result.colour if result.colour.ndim == 3 else result.colour[..., None]
        if result.alpha is not None:
            out = np.dstack([out, result.alpha])
        return out if pixels.ndim == 3 else out[..., 0]

    def upscale_file(self, source: str | Path, target: str | Path, overwrite: bool = False) -> Path:
        """Read, x4 and write one file with every guarantee of upscale.py (inputs never written, an existing
        target replaced only with `overwrite` and only if it is an earlier result, atomic exclusive commit)."""
        source, target = Path(source), Path(target)
        replace = check_output(source, target, overwrite, {source.resolve()})
        image = read_image(source, self.max_pixels)
        write_image(target, self.upscale_image(image, name=source), replace=replace)
        return target

    def close(self) -> None:
        """Release the backend (and the FP32 fallback, if it was loaded)."""
        if self._rerun is not None:
            self._rerun.deactivate()
        self._backend.deactivate()

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
