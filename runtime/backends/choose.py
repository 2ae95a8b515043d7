"""Choosing a backend: each candidate of the registry in turn is made, loaded and self-checked against the
model's canary (core/canary.py); the decision says which one runs, why, and why the better-ranked ones
were passed over.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.boundary import from_model, to_model
from core.canary import canary_input, judge, read_canary
from core.errors import BackendError, first_line
from core.thresholds import THRESHOLDS
from core.vocabulary import BACKENDS
from runtime.backends.base import Backend
from runtime.backends.pytorch import TorchBackend
from runtime.backends.registry import REGISTRY
from runtime.model.source import Model


def _canary(path: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(input, reference or None): read once per file version, though `auto` may check several backends and
    a fallback; a canary re-exported in place (another inode, size or time) is read again."""
    if path is None:
        return canary_input(), None
    st = path.stat()
    return _read_canary(path, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_canary(path: Path, *_version: int) -> tuple[np.ndarray, np.ndarray]:
    return read_canary(path)


def self_check(backend: Backend, model: Model) -> None:
    """Run the canary through an active backend; BackendError with the reason if it misses its reference
    (or, without one, is not a plausible x4 model). Measured cost in BENCHMARKS.md."""
    try:
        inputs, reference = _canary(model.canary)
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    try:
        output = backend.infer(inputs)
    except (ValueError, RuntimeError) as exc:  # a graph that is not LSANet's can fail on the canary's shape
        raise BackendError(f"self-check failed: {first_line(exc)}") from None
    if reason := judge(output, inputs, reference, backend.precision) or _pixel_path(backend, inputs):
        raise BackendError(f"self-check failed: {reason}")


def _pixel_path(backend: Backend, inputs: np.ndarray) -> str | None:
    """None if the backend's 8-bit path gives what its float path gives for the canary made 8-bit, to
    THRESHOLDS.pixel_path_levels; else the reason. Catches a pixel boundary that is wrong in the graph. A
    backend whose 8-bit path is the host form around its float path has nothing to compare: not run."""
    if not backend.converts_pixels:
        return None
    tiles = np.rint(np.clip(inputs, 0, 1).transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    got, broken = backend.infer_pixels(tiles)
    want, _ = from_model(backend.infer(to_model(tiles)), np.uint8)
    if broken.any():
        return "its 8-bit path found NaN/Inf in its output for the canary"
    if got.shape != want.shape:
        return f"its 8-bit path returned shape {got.shape}, its float path {want.shape}"
    off = int(np.abs(got.astype(np.int16) - want).max())
    if off > THRESHOLDS.pixel_path_levels:
        return f"its 8-bit path is up to {off} levels from its float path (at most {THRESHOLDS.pixel_path_levels})"
    return None


def _activate_checked(backend: Backend, model: Model) -> None:
    """Load the backend and run its self-check; on any failure it is released again before raising."""
    try:
        backend.activate()
        self_check(backend, model)
    except (BackendError, MemoryError) as exc:
        reason = str(exc) or type(exc).__name__
        try:
            backend.deactivate()
        except BackendError as released:  # the first reason is the one that matters; the release's is added
            reason += f" (and then: {released})"
        raise BackendError(reason) from None


@dataclass
class Choice:
    """What selection decided: the active, self-checked backend, why it was chosen, the better-ranked ones
    passed over (each with its reason), and the FP32 backend that reruns tiles an FP16 backend returns with
    NaN/Inf (not loaded until a tile needs it; None when the backend is FP32 or no FP32 graph exists)."""

    backend: Backend
    reason: str
    skipped: list[str]
    fallback: Backend | None = None


def _fallback(model: Model, backend: Backend) -> Backend | None:
    """The FP32 backend that reruns NaN/Inf tiles of an FP16 or bf16 one: ONNX Runtime on the FP32 graph
    (CUDA where it loads, else the CPU), or PyTorch FP32 on the same device for a checkpoint-only model."""
    if backend.precision == "fp32":
        return None
    if "fp32" in model.onnx:
        from runtime.backends.onnxruntime import ORTBackend

        return ORTBackend(model.onnx["fp32"], "fp32", "auto")
    if isinstance(backend, TorchBackend):
        return TorchBackend(model.ckpt, model.key, device=backend.device, precision="fp32")
    return None


def choose_backend(name: str, model: Model, precision: str | None = None) -> Choice:
    """For 'auto' the first backend that loads and passes its self-check, else the named one (an error saying
    why if it cannot). Every candidate passed over is listed with its reason.

    `auto` with fp16 asks for a GPU's half precision: where no GPU backend runs, the CPU backends run their
    default precision (FP16 is slower than it on CPUs: BENCHMARKS.md) and the reason says so."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
    skipped, reasons = [], []
    for entry in REGISTRY:
        if name not in ("auto", entry.name):
            continue
        cpu_instead = name == "auto" and precision == "fp16" and not entry.gpu
        try:
            backend = entry.make(model, None if cpu_instead else precision)
            _activate_checked(backend, model)
        except BackendError as exc:
            skipped.append(f"{entry.label}: {exc}")
            reasons.append(str(exc))
            continue
        why = entry.why if name == "auto" else "chosen with --backend"
        if cpu_instead:
            why += f"; --fp16 needs a GPU backend, so it runs {backend.precision} (FP16 is slower on CPUs)"
        return Choice(backend, why, skipped, _fallback(model, backend))
    if name == "auto":
        raise BackendError("no backend can run here: " + "; ".join(skipped))
    raise BackendError(f"backend {name} cannot run: {'; '.join(reasons)}")


