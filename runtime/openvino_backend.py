"""OpenVINO on the CPU, running the FP32 ONNX graph: the fastest CPU path measured (BENCHMARKS.md).

INFERENCE_PRECISION_HINT is pinned to f32: on CPUs that report BF16 support (this AMD EPYC included)
OpenVINO otherwise silently computes in bfloat16, which moved outputs by up to 3.1 (not 3.1/255) here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.backend import Backend, BackendError, BackendOutOfMemory


class OpenVINOBackend(Backend):
    name = "openvino"

    def __init__(self, onnx_path: Path, threads: int | None = None) -> None:
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self.threads = threads or os.cpu_count() or 1
        self._request = None

    def activate_impl(self) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("openvino: not installed (pip install openvino)") from None
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": self.threads,
        }
        try:
            compiled = core.compile_model(str(self.onnx_path), "CPU", config)
        except RuntimeError as exc:
            raise BackendError(f"openvino: cannot compile {self.onnx_path}: {str(exc).splitlines()[0]}") from None
        self._request = compiled.create_infer_request()

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._request.infer({0: batch})[0].copy()
        except RuntimeError as exc:
            if "memory" in str(exc).lower() or "alloc" in str(exc).lower():
                raise BackendOutOfMemory(str(exc).splitlines()[0]) from None
            raise

    def deactivate_impl(self) -> None:
        self._request = None
