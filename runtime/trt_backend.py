"""TensorRT-RTX and standard TensorRT engines on an NVIDIA GPU, with pycuda buffers and a stream.

Follows ../shared/docs/tensorrt-notes.md ("Run" and "pycuda pattern"): the sidecar is checked before
anything is deserialized; TensorRT-RTX's get_engine_validity is asked next; deserialize_cuda_engine's None
is turned into an error carrying the logger's reason; name-based I/O; buffers allocated once for the
profile's maximum shape; a non-default stream; execute_async_v3. tensorrt/tensorrt_rtx and pycuda are
imported only here, only on activate(). TensorRT-RTX compiles its kernels for the actual GPU when the
execution context is made (15-30 s the first time), so a runtime cache (the bindings' IRuntimeConfig /
IRuntimeCache: create_runtime_config, create_runtime_cache, deserialize, set_runtime_cache, serialize) is
kept in the user cache, keyed by the engine's sha256, and saved when the backend is released.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from export import trt_build
from export.cuda_device import cuda_device
from export.fileutil import atomic_write_bytes
from export.trt_build import MODULES, RTX_DEFAULT_TARGETS, capture_logger
from runtime.backend import Backend, BackendError, BackendOutOfMemory, Limits
from runtime.fetch import cache_dir

REBUILD = "rebuild it with: python export.py --ckpt CHECKPOINT --fp16"


def read_sidecar(engine: Path) -> dict:
    """The engine's sidecar, checked to belong to it; a BackendError that says what to rebuild otherwise."""
    try:
        return trt_build.read_sidecar(engine)
    except trt_build.SidecarError as exc:
        raise BackendError(f"{exc}; {REBUILD}") from None


def check_compatibility(engine: Path, sidecar: dict, installed_version: str | None, gpu_cc: str | None) -> None:
    """Raise BackendError saying what to rebuild when this engine cannot run here."""
    flavor = sidecar.get("flavor")
    if flavor not in MODULES:
        raise BackendError(f"{engine}: unknown engine flavour {flavor!r}; {REBUILD}")
    if installed_version is None:
        raise BackendError(f"{engine}: built with {MODULES[flavor]} {sidecar['version']}, which is not installed here")
    if gpu_cc is None:
        raise BackendError(f"{engine}: a TensorRT engine needs an NVIDIA GPU, and none was found")
    sm = "SM" + gpu_cc.replace(".", "")
    if flavor == "rtx":
        if installed_version.split(".")[:2] != str(sidecar["version"]).split(".")[:2]:
            raise BackendError(
                f"{engine}: built with TensorRT-RTX {sidecar['version']}, installed {installed_version}; {REBUILD}"
            )
        targets = sidecar.get("target_compute_capabilities") or list(RTX_DEFAULT_TARGETS)
        if sm not in targets:
            raise BackendError(
                f"{engine}: built for {', '.join(targets)}, this GPU is {sm}; {REBUILD} --compute-capability {sm}"
            )
        return
    if installed_version != sidecar["version"]:
        raise BackendError(f"{engine}: built with TensorRT {sidecar['version']}, installed {installed_version}; {REBUILD}")
    targets = sidecar.get("target_compute_capabilities") or []
    ampere_plus = targets == ["AMPERE_PLUS"] and float(gpu_cc) >= 8.0
    if not ampere_plus and sm not in targets:
        raise BackendError(f"{engine}: built for {', '.join(targets) or 'another GPU'}, this GPU is {sm}; {REBUILD} on this GPU")


class TensorRTBackend(Backend):
    def __init__(self, engine: Path, fp32_onnx: Path | None = None) -> None:
        super().__init__()
        self.engine_path = Path(engine)
        self.sidecar = read_sidecar(self.engine_path)
        self.flavor = self.sidecar["flavor"]
        self.name = "tensorrt-rtx" if self.flavor == "rtx" else "tensorrt"
        self.fp32_onnx = fp32_onnx
        profile = next(iter(self.sidecar["profile"].values()))
        n0, _, h0, w0 = profile["min"]
        n1, _, h1, w1 = profile["max"]
        self._limits = Limits(min_side=max(h0, w0), max_side=min(h1, w1), max_batch=n1)

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def precision(self) -> str:
        return self.sidecar["precision"]

    def activate_impl(self) -> None:
        try:
            trt = importlib.import_module(MODULES[self.flavor])
        except ImportError:
            trt = None
        device = cuda_device()
        check_compatibility(
            self.engine_path, self.sidecar, trt.__version__ if trt else None, device.compute_capability if device else None
        )
        try:
            import pycuda.autoprimaryctx  # noqa: F401 - shares the primary context (tensorrt-notes.md)
            import pycuda.driver as cuda
        except ImportError:
            raise BackendError("pycuda is not installed (pip install -e '.[gpu]')") from None
        logger = capture_logger(trt)
        runtime = trt.Runtime(logger)
        plan = self.engine_path.read_bytes()
        if self.flavor == "rtx":
            validity, _diagnostics = runtime.get_engine_validity(plan)
            if validity == trt.EngineValidity.INVALID:
                raise BackendError(f"{self.engine_path}: TensorRT-RTX reports the engine invalid here; {REBUILD}")
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendError(f"{self.engine_path}: cannot deserialize ({'; '.join(logger.messages[-2:])}); {REBUILD}")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._input = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._runtime_cache = None
        if self.flavor == "rtx":
            runtime_config = engine.create_runtime_config()
            self._runtime_cache = runtime_config.create_runtime_cache()
            if self.runtime_cache_path.is_file():
                # False means the cache was made for another GPU, driver or version: it is then rebuilt.
                self._runtime_cache.deserialize(self.runtime_cache_path.read_bytes())
            runtime_config.set_runtime_cache(self._runtime_cache)
            self._context = engine.create_execution_context(runtime_config)
        else:
            self._context = engine.create_execution_context()
        n, c, h, w = engine.get_tensor_profile_shape(self._input, 0)[2]
        in_size, out_size = n * c * h * w, n * c * h * w * 16
        try:
            self._host_in = cuda.pagelocked_empty(in_size, np.float32)
            self._host_out = cuda.pagelocked_empty(out_size, np.float32)
            self._device_in = cuda.mem_alloc(self._host_in.nbytes)
            self._device_out = cuda.mem_alloc(self._host_out.nbytes)
        except cuda.MemoryError as exc:
            raise BackendOutOfMemory(str(exc)) from None
        self._stream = cuda.Stream()
        self._cuda = cuda
        self._engine = engine

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        cuda, context = self._cuda, self._context
        context.set_input_shape(self._input, batch.shape)
        out_shape = tuple(context.get_tensor_shape(self._output))
        size = int(np.prod(out_shape))
        self._host_in[: batch.size] = batch.ravel()
        context.set_tensor_address(self._input, int(self._device_in))
        context.set_tensor_address(self._output, int(self._device_out))
        cuda.memcpy_htod_async(self._device_in, self._host_in[: batch.size], self._stream)
        if not context.execute_async_v3(self._stream.handle):
            raise BackendError(f"{self.name}: execute_async_v3 failed for shape {batch.shape}")
        cuda.memcpy_dtoh_async(self._host_out[:size], self._device_out, self._stream)
        self._stream.synchronize()
        return self._host_out[:size].reshape(out_shape).copy()

    @property
    def runtime_cache_path(self) -> Path:
        return cache_dir() / "rtx-runtime" / f"{self.sidecar['engine_sha256'][:16]}.cache"

    def deactivate_impl(self) -> None:
        if self._runtime_cache is not None:
            self.runtime_cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.runtime_cache_path, bytes(self._runtime_cache.serialize()))
            self._runtime_cache = None
        for name in ("_device_in", "_device_out"):
            buffer = getattr(self, name, None)
            if buffer is not None:
                buffer.free()
        self._context = self._engine = self._stream = None

    def fp32_rerun(self) -> Backend | None:
        if self.precision == "fp32" or self.fp32_onnx is None:
            return None
        from runtime.ort_backend import ORTBackend

        return ORTBackend(self.fp32_onnx, "fp32")
