"""The runtime as a library: `Upscaler` loads a model once, chooses and self-checks a backend, and upscales
numpy images or files. upscale.py, the folder runs, a Ray actor and the video loop all use it the same way.

    >>> from runtime import Settings, Upscaler
    >>> with Upscaler(Settings(backend="auto", tile=512)) as up:  # doctest: +SKIP
    ...     out = up(image)                                       # H x W x C uint8/uint16, RGB(A) order
    ...     up.upscale_file("in.png", "out.png")
    ...     print(up.backend, up.choice.reason)

Construction is cheap and checks nothing; `open()` (or `with`) finds the model, loads the backend and runs
its self-check, and may take seconds (a first run without an export downloads and exports the public
checkpoint). Thread safety: calls may come from several threads; they are serialised (one inference at a
time per Upscaler), since a backend's session and buffers are not shared safely. For parallel work make
one Upscaler per worker (a Ray actor each, say).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.descriptor import LSANET, SCALE, ModelDescriptor
from core.errors import DeployError
from runtime.backends.base import Backend, Limits
from runtime.backends.choose import Choice, choose_backend, self_check
from runtime.images.alpha import needs_network, upscale_alpha
from runtime.images.io import Encoding, Image
from runtime.images.outscale import check_outscale, resize_result
from runtime.jobs.step import Complete, run_one
from runtime.memory import check_fits, whole_image_side
from runtime.model.source import Model, resolve_model
from runtime.settings import Settings
from runtime.tiling import Run, TileConfig, count_tiles, upscale

# Tiles per pass for a fixed-shape backend that takes batches (a TensorRT engine's profile allows up to its
# max batch): more work per call from Python, while a pass of 512x512 tiles stays near 1 GB of FP16
# activations (the six block outputs the final 1x1 reads, 36 channels each, are about 0.2 GB per tile).
# Not yet measured on a GPU: bench/gpu_check.py's throughput line reports the tiles per second it gives.
FIXED_BATCH = 4


def tile_config(limits: Limits, tile: int | None = None, overlap: int | None = None) -> TileConfig:
    """Tiling within a backend's limits: defaults measured in BENCHMARKS.md, capped by what it accepts.

    `tile` 0 means as few passes as memory allows: the largest pass that fits the memory available now
    (runtime/memory.py), the whole image where it fits, and never a pass the backend does not accept.
    A backend that runs best on one shape (a GPU's) gets tiles of exactly the tile size, FIXED_BATCH at a
    time where it takes batches, unless `tile` is 0 (padding every image up to the memory's limit would cost
    more than a new shape). As many batches are in flight as the backend runs at once.
    """
    default = TileConfig()
    side = default.tile if tile is None else (tile or whole_image_side())
    fixed = limits.fixed_shape and tile != 0
    try:
        return TileConfig(
            tile=min(side, limits.max_side or side),
            overlap=default.overlap if overlap is None else overlap,
            batch=min(limits.max_batch or FIXED_BATCH, FIXED_BATCH) if fixed else default.batch,
            min_side=limits.min_side,
            max_side=limits.max_side,
            fixed=fixed,
            in_flight=limits.concurrent,
        )
    except ValueError as exc:
        raise DeployError(f"--tile/--overlap: {exc}") from None


def _as_rgb(plane: np.ndarray) -> np.ndarray:
    return np.repeat(plane[..., None], 3, axis=2)


def _as_grey(rgb: np.ndarray) -> np.ndarray:
    # The mean of three integers, rounded: computed in a wider type so uint16 cannot overflow.
    return ((rgb.astype(np.uint32).sum(axis=2) + 1) // 3).astype(rgb.dtype)


class Upscaler:
    """x4 images with LSANet through the fastest backend that loads here and passes its self-check.

    `Upscaler(settings)` or `Upscaler(backend="openvino", tile=256, ...)`: keywords are Settings fields and
    change the given (or default) settings; an unknown one is a TypeError.
    """

    descriptor: ModelDescriptor = LSANET

    def __init__(self, settings: Settings | None = None, /, **changes: Any) -> None:
        self.settings = dataclasses.replace(settings or Settings(), **changes)
        check_outscale(self.settings.outscale)
        self._model: Model | None = None
        self._choice: Choice | None = None
        self._config: TileConfig | None = None
        self._closed = False
        self._lock = threading.Lock()

    def open(self) -> Upscaler:
        """Find the model, load and self-check a backend (once); DeployError subclasses say why it cannot."""
        with self._lock:
            if self._closed:
                raise DeployError("this Upscaler is closed")
            if self._choice is not None:
                return self
            s = self.settings
            model = resolve_model(s.ckpt, s.onnx, s.engine, s.engines_dir, s.key)
            choice = choose_backend(s.backend, model, s.precision)
            try:
                self._config = tile_config(choice.backend.limits, s.tile, s.overlap)
            except DeployError:
                choice.backend.deactivate()
                raise
            self._model, self._choice = model, choice
        return self

    def _opened(self) -> Choice:
        if self._closed:
            raise DeployError("this Upscaler is closed")
        if self._choice is None:
            raise DeployError("this Upscaler is not open: use `with Upscaler(...) as up:` or call open()")
        return self._choice

    @property
    def choice(self) -> Choice:
        """What was chosen: the backend, why, the better-ranked ones passed over with their reasons."""
        return self._opened()

    @property
    def model(self) -> Model:
        """Where the model came from (`model.origin` says it in words)."""
        self._opened()
        return self._model

    @property
    def config(self) -> TileConfig:
        """The tiling in use (tile budget, overlap, the backend's limits)."""
        self._opened()
        return self._config

    @property
    def backend(self) -> str:
        """The backend in use, e.g. 'openvino (fp32)'."""
        return self._opened().backend.describe()

    @property
    def max_pixels(self) -> int:
        return self.settings.max_pixels

    def passes(self, image: Image) -> int:
        """Passes through the network `upscale_image` will run for this image (for progress bars)."""
        per_plane = count_tiles(image.colour.shape[0], image.colour.shape[1], self.config)
        return per_plane * (2 if image.alpha is not None and needs_network(image.alpha) else 1)

    def _rerun_fp32(self, fallback: Backend) -> Run:
        def rerun(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """The FP32 fallback for NaN/Inf tiles, loaded and self-checked on first use."""
            if not fallback.active:
                fallback.activate()
                self_check(fallback, self._model)
            return fallback.infer_pixels(batch)

        return rerun

    def upscale_image(
        self, image: Image, progress: Callable[[int], None] | None = None, name: str | Path = "<image>"
    ) -> Image:
        """x4 an `Image` (colour, grey, alpha, metadata as read by runtime/images/io.py): colour (grey as
        R = G = B, back as the mean of the three), then alpha by runtime/images/alpha.py's rule; metadata
        carried over; then resized to the settings' outscale (runtime/images/outscale.py) unless that is 4.
        An ImageError naming `name` before any work when the result would not fit in memory."""
        choice = self._opened()
        height, width = image.colour.shape[:2]
        scale = max(self.settings.outscale, SCALE)  # the x4 result, and at most as large the resized one
        check_fits(height, width, image.planes, image.dtype.itemsize, name, scale)
        with self._lock:
            run, config = choice.backend.infer_pixels, self._config
            rerun = self._rerun_fp32(choice.fallback) if choice.fallback is not None else None

            def grey(plane: np.ndarray) -> np.ndarray:
                return _as_grey(upscale(_as_rgb(plane), run, config, rerun, progress))

            colour = grey(image.colour) if image.is_grey else upscale(image.colour, run, config, rerun, progress)
            alpha = None if image.alpha is None else upscale_alpha(image.alpha, grey)
        encoding = Encoding(self.settings.jpeg_quality, self.settings.webp_quality)
        result = dataclasses.replace(image, colour=colour, alpha=alpha, encoding=encoding)
        return resize_result(result, width, height, self.settings.outscale)

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

    def upscale_file(self, source: str | Path, target: str | Path, overwrite: bool | None = None) -> Path:
        """Read, x4 and write one file with every guarantee of upscale.py (runtime/jobs/step.py: inputs
        never written, atomic exclusive commit). A target that is already this tool's complete result for
        `source` is left as it is (a re-run resumes) unless `overwrite` (default: the settings'), which
        redoes it; any other existing file is never replaced. Returns the target."""
        source, target = Path(source), Path(target)
        overwrite = self.settings.overwrite if overwrite is None else overwrite
        upscale_one = lambda image, name: self.upscale_image(image, name=name)  # noqa: E731
        try:
            s = self.settings
            return run_one(source, target, upscale_one, overwrite, {source.resolve()}, s.max_pixels, s.outscale)
        except Complete:
            return target

    def close(self) -> None:
        """Release the backend and the FP32 fallback, if it was loaded; both are released even if one fails."""
        with self._lock:
            self._closed = True
            choice, self._choice = self._choice, None
        if choice is None:
            return
        try:
            if choice.fallback is not None:
                choice.fallback.deactivate()
        finally:
            choice.backend.deactivate()

    def __enter__(self) -> Upscaler:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
