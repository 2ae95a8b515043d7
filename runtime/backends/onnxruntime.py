"""ONNX Runtime: the CUDA provider where onnxruntime-gpu and a GPU are present, else the CPU provider;
FP32 or FP16 graph (the FP16 graph has FP32 input and output, so the feed is the same).

CUDA follows ONNX Runtime's CUDA execution provider docs: `get_available_providers()` lists CUDA even when
the CUDA/cuDNN libraries are missing, and the session then silently runs on the CPU (onnxruntime issue
23372), so the session's own providers are checked; `preload_dlls()` (ORT >= 1.21) loads CUDA/cuDNN from the
nvidia-* wheels first; cuDNN's algorithm search is HEURISTIC (the default EXHAUSTIVE re-benchmarks every new
tile shape) and the arena grows by what is asked (kSameAsRequested), not to the next power of two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import first_line
from core.nvidia import cuda_device
from runtime.backends.base import Backend, BackendError, BackendOutOfMemory
from runtime.cores import usable_cores

CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}


def cuda_provider_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class ORTBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path: Path, precision: str = "fp32", device: str = "auto", threads: int | None = None) -> None:
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self._precision = precision
        gpu = cuda_provider_available() and cuda_device() is not None
        self.device = ("cuda" if gpu else "cpu") if device == "auto" else device
        self.threads = threads or usable_cores()
        self._session = None

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, first the one that runs (empty before activate())."""
        return self._session.get_providers() if self._session is not None else []

    def describe(self) -> str:
        return f"{self.name} {self.device.upper()} ({self.precision})"

    def activate_impl(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        if self.device == "cuda":
            if not cuda_provider_available():
                raise BackendError("onnxruntime: the CUDA provider is not available (install onnxruntime-gpu; needs a GPU)")
            if cuda_device() is None:
                raise BackendError("onnxruntime: the CUDA provider needs an NVIDIA GPU, and none was found")
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
            providers = [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"]
        else:
            # bench/cpu_options.py: BASIC is as fast as EXTENDED here, ALL's layout transforms 1.6x slower.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            providers = ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(self.onnx_path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for unreadable or invalid models
            raise BackendError(f"onnxruntime: cannot load {self.onnx_path}: {first_line(exc)}") from None
        if self.device == "cuda" and self._session.get_providers()[0] != "CUDAExecutionProvider":
            self._session = None
            raise BackendError(
                "onnxruntime: the CUDA provider did not load (CUDA 12 / cuDNN 9 libraries missing?); the session "
                "would run on the CPU"
            )

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._session.run(None, {self._session.get_inputs()[0].name: batch})[0]
        except Exception as exc:  # out-of-memory arrives as a generic runtime failure with this text
            if "Failed to allocate memory" in str(exc) or "out of memory" in str(exc).lower():
                raise BackendOutOfMemory(first_line(exc)) from None
            raise

    def deactivate_impl(self) -> None:
        self._session = None
