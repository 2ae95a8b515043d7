"""ONNX Runtime: the CUDA provider where onnxruntime-gpu and a GPU are present, else the CPU provider;
FP32 or FP16 graph (the FP16 graph has FP32 input and output, so the feed is the same).

CUDA follows ONNX Runtime's CUDA execution provider docs: `get_available_providers()` lists CUDA even when
the CUDA/cuDNN libraries are missing, and the session then silently runs on the CPU (onnxruntime issue
23372), so the session's own providers are checked; `preload_dlls()` (ORT >= 1.21) loads CUDA/cuDNN from the
nvidia-* wheels first; cuDNN's algorithm search is HEURISTIC (the default EXHAUSTIVE re-benchmarks every new
tile shape) and the arena grows by what is asked (kSameAsRequested), not to the next power of two.

On CUDA, 8-bit tiles run through a second session: the graph inside core/boundary.py's pixel boundary, so
bytes cross to the GPU and back and the conversion runs there, not in Python while the GPU waits. On the
CPU the host converts: the graph's boundary measured no faster there (bench/pixel_boundary.py), and
building it imports the onnx package, 0.4 s of start-up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.boundary import nonfinite, wrap_onnx
from core.errors import first_line
from core.nvidia import cuda_device
from runtime.backends.base import Backend, BackendError, BackendOutOfMemory
from runtime.cores import usable_cores

CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}
# FP32 means FP32: ONNX Runtime's CUDA provider runs FP32 convolutions in TF32 on Ampere and newer by default
# (use_tf32), which moves the canary by about 4e-3 against its 1e-4 FP32 bound (tensorrt-notes).
FP32_CUDA_OPTIONS = {**CUDA_OPTIONS, "use_tf32": "0"}


def cuda_provider_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class ORTBackend(Backend):
    """`device` "cuda", "cpu", or "auto": CUDA where it loads whole at activate(), else the CPU (the FP32
    rerun of NaN tiles uses auto, so it runs wherever ONNX Runtime can). `graph_boundary`: convert 8-bit
    tiles in the graph; None means on CUDA only (True lets the tests run the CUDA path's graph on a CPU)."""

    name = "onnxruntime"

    def __init__(
        self, onnx_path: Path, precision: str = "fp32", device: str = "auto", threads: int | None = None,
        graph_boundary: bool | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self._precision = precision
        self.requested = device
        self.device = "cuda" if device == "cuda" else "cpu"  # what runs; decided for "auto" at activate()
        self.threads = threads or usable_cores()
        self.graph_boundary = graph_boundary
        self._session = self._pixels = None

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, first the one that runs (empty before activate())."""
        return self._session.get_providers() if self._session is not None else []

    @property
    def converts_pixels(self) -> bool:
        return self._pixels is not None

    def describe(self) -> str:
        return f"{self.name} {self.device.upper()} ({self.precision})"

    def activate_impl(self) -> None:
        graph, self._session, self._pixels = str(self.onnx_path), None, None
        if self.requested in ("cuda", "auto"):
            try:
                self._session, self.device = self._cuda_session(graph), "cuda"
            except BackendError:
                if self.requested == "cuda":
                    raise
        if self._session is None:
            self._session, self.device = self._cpu_session(graph), "cpu"
        if not (self.device == "cuda" if self.graph_boundary is None else self.graph_boundary):
            return
        try:
            wrapped = wrap_onnx(self.onnx_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise BackendError(f"onnxruntime: cannot add the 8-bit boundary to {self.onnx_path}: {first_line(exc)}") from None
        self._pixels = self._cuda_session(wrapped) if self.device == "cuda" else self._cpu_session(wrapped)

    def _options(self):  # -> ort.SessionOptions
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        return options

    def _load(self, graph: str | bytes, options, providers: list):  # -> ort.InferenceSession
        import onnxruntime as ort

        try:
            return ort.InferenceSession(graph, options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for unreadable or invalid models
            raise BackendError(f"onnxruntime: cannot load {self.onnx_path}: {first_line(exc)}") from None

    def _cuda_session(self, graph: str | bytes):  # -> ort.InferenceSession
        """A session whose every node runs on CUDA, or BackendError saying why not."""
        import onnxruntime as ort

        if not cuda_provider_available():
            raise BackendError("onnxruntime: the CUDA provider is not available (install onnxruntime-gpu; needs a GPU)")
        if cuda_device() is None:
            raise BackendError("onnxruntime: the CUDA provider needs an NVIDIA GPU, and none was found")
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        options = self._options()
        # A node CUDA cannot run is an error at load, not a silent copy to the CPU (ORT session config keys).
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        cuda = FP32_CUDA_OPTIONS if self._precision == "fp32" else CUDA_OPTIONS
        session = self._load(graph, options, [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"])
        if session.get_providers()[0] != "CUDAExecutionProvider":  # onnxruntime issue 23372: libraries missing
            raise BackendError(
                "onnxruntime: the CUDA provider did not load (CUDA 12 / cuDNN 9 libraries missing?); the session "
                "would run on the CPU"
            )
        return session

    def _cpu_session(self, graph: str | bytes):  # -> ort.InferenceSession
        import onnxruntime as ort

        options = self._options()
        # bench/cpu_options.py: BASIC is as fast as EXTENDED here, ALL's layout transforms 1.6x slower.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        return self._load(graph, options, ["CPUExecutionProvider"])

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self._run(self._session, batch)[0]

    def pixels_impl(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if tiles.dtype != np.uint8 or not self.converts_pixels:
            return super().pixels_impl(tiles)
        pixels, checksums = self._run(self._pixels, tiles)
        return pixels, nonfinite(checksums)

    @staticmethod
    def _run(session, feed: np.ndarray) -> list[np.ndarray]:
        try:
            return session.run(None, {session.get_inputs()[0].name: feed})
        except Exception as exc:  # out-of-memory arrives as a generic runtime failure with this text
            if "Failed to allocate memory" in str(exc) or "out of memory" in str(exc).lower():
                raise BackendOutOfMemory(first_line(exc)) from None
            raise

    def deactivate_impl(self) -> None:
        self._session = self._pixels = None
