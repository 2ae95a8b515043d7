"""OpenVINO on the CPU, running the FP32 ONNX graph: the fastest CPU path measured (BENCHMARKS.md).

Precision is explicit. INFERENCE_PRECISION_HINT is always set: on CPUs with bf16 arithmetic (AVX-512 BF16
or AMX) OpenVINO otherwise silently computes in bfloat16, which moved outputs by up to 3.1 (not 3.1/255).
"fp32" is the default; "bf16" is an opt-in for those CPUs (faster, less exact: BENCHMARKS.md) and is refused
where the CPU lacks it, since OpenVINO would quietly run FP32 and the label would lie.

Compiled models are cached in the user cache (OpenVINO's CACHE_DIR: it keys blobs by the graph's content,
the device and the configuration), which halves compile time after the first run; a cache folder that cannot
be created just means no cache. Every load is still self-checked against the canary by runtime/model/source.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.errors import first_line
from runtime.backends.base import Backend, BackendError, BackendOutOfMemory
from runtime.cores import usable_cores
from runtime.model.fetch import cache_dir

# Our precision names -> OpenVINO's element types.
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def model_cache() -> Path | None:
    """The folder OpenVINO caches compiled models in, created if needed; None when it cannot be."""
    folder = cache_dir() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def cpu_has_bf16() -> bool:
    """Whether OpenVINO can compute in bfloat16 on this CPU (it reports BF16 among its capabilities)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOBackend(Backend):
    name = "openvino"

    def __init__(self, onnx_path: Path, precision: str = "fp32", threads: int | None = None, cache: bool = True) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise BackendError(f"openvino: runs {' or '.join(PRECISIONS)}, not {precision}")
        self.onnx_path = Path(onnx_path)
        self._precision = precision
        self.threads = threads or usable_cores()
        self.cache = cache
        self._request = self._compiled = None

    @property
    def precision(self) -> str:
        return self._precision

    def activate_impl(self) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("openvino: not installed (pip install openvino)") from None
        core = ov.Core()
        if self._precision == "bf16" and not cpu_has_bf16():
            raise BackendError("openvino: this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX); use fp32")
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": PRECISIONS[self._precision],
            "INFERENCE_NUM_THREADS": self.threads,
        }
        if self.cache and (folder := model_cache()) is not None:
            config["CACHE_DIR"] = str(folder)
        try:
            compiled = core.compile_model(str(self.onnx_path), "CPU", config)
        except RuntimeError as exc:
            raise BackendError(f"openvino: cannot compile {self.onnx_path}: {first_line(exc)}") from None
        used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if used != PRECISIONS[self._precision]:
            raise BackendError(f"openvino: asked for {self._precision}, the CPU plugin computes in {used}")
        self._compiled = compiled
        try:
            self._request = compiled.create_infer_request()
        except RuntimeError as exc:  # the request allocates the model's memory
            raise BackendError(f"openvino: cannot create an inference request for {self.onnx_path}: {first_line(exc)}") from None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self._request is None:  # after an out-of-memory: the model compiled again, from the model cache
            self.activate_impl()
        try:
            return self._request.infer({0: batch})[0].copy()
        except RuntimeError as exc:
            if "memory" in str(exc).lower() or "alloc" in str(exc).lower():
                # A request whose allocation failed stays broken, and the compiled model keeps the memory it
                # grew to for the failed shape: both are let go, so that the next pass (the tiler's smaller
                # tile) starts from a model compiled again, not from what the failure left.
                self._request = self._compiled = None
                raise BackendOutOfMemory(first_line(exc)) from None
            raise

    def deactivate_impl(self) -> None:
        self._request = self._compiled = None
