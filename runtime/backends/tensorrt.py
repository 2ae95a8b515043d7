"""TensorRT-RTX and standard TensorRT engines on an NVIDIA GPU, with cuda-python buffers and a stream.

Follows ../shared/docs/tensorrt-notes.md ("Run", "Update") and NVIDIA's TensorRT-RTX sample
samples/apiUsage/python/api_usage.py: every None / False result and every CUDA error code is checked; the
sidecar is checked before anything is deserialized; TensorRT-RTX's get_engine_validity is asked next (its
diagnostics bits named, SUBOPTIMAL a warning); the engine's I/O must be the contract's FP32 `lr` / `sr`,
and, from this exporter, the pixel outputs `sr_pixels` (uint8) / `sr_sum` of core/boundary.py: 8-bit tiles
then go in through the host's `to_model`, written straight into the pinned input, and come back as bytes
(16x fewer than floats, and no conversion on the host). One lane per optimisation profile of the engine
(export/trt_build.py builds two copies of its profile), each an execution context on its own profile with
its own non-default stream and buffers (pinned on the host and on the device, one pair per I/O tensor,
allocated once, sized by the context for the profile's largest input), runs one call at a time, so two
calls overlap: one tile's copies and host work hide behind the other's compute. Concurrent contexts of a
dynamic-shape engine must each use a separate profile (NvInferRuntime.h, createExecutionContext), set with
set_optimization_profile_async on the lane's stream. execute_async_v3; only the outputs a call needs are
copied back. TensorRT-RTX compiles its
kernels for the actual GPU in create_execution_context (15-30 s the first time), so a runtime cache, shared
by the lanes' contexts, is kept in the user cache, keyed by the engine's sha256, and saved when the backend
is released. Every way of not running here is a BackendError from activate() (which then frees
what it had allocated), so `auto` can go on to the next backend. tensorrt/tensorrt_rtx and cuda-python are
imported only here, only on activate().
"""

from __future__ import annotations

import ctypes
import importlib
import math
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from core.artifacts import MODULES, REBUILD, RTX_DEFAULT_TARGETS
from core.boundary import CHECKSUM, PIXELS_OUT, nonfinite, to_model
from core.descriptor import INPUT_NAME, OUTPUT_NAME
from core.files import atomic_write_bytes
from core.nvidia import CudaDevice, cuda_device
from core.tensorrt_common import process_logger, rtx_targets
from runtime.backends.base import Backend, BackendError, Limits
from runtime.model.fetch import cache_dir
from runtime.model.source import engine_sidecar

PIP = "pip install -e '.[gpu]'"
# What to do about each EngineInvalidityDiagnostics bit (tensorrt_rtx 1.7 names them).
DIAGNOSTIC_HINTS = {
    "VERSION_MISMATCH": REBUILD,
    "UNSUPPORTED_CC": f"{REBUILD} --compute-capability for this GPU",
    "OLD_CUDA_DRIVER": "update the NVIDIA driver",
    "OLD_CUDA_RUNTIME": "update the CUDA runtime",
    "INSUFFICIENT_GPU_MEMORY": "free GPU memory",
    "MALFORMED_ENGINE": REBUILD,
    "CUDA_ERROR": "check the GPU and driver (nvidia-smi)",
}


def check_compatibility(engine: Path, sidecar: dict, installed_version: str, gpu_cc: str) -> None:
    """Raise BackendError saying what to do when this engine cannot run with this TensorRT on this GPU."""
    flavor = sidecar.get("flavor")
    if flavor not in MODULES:
        raise BackendError(f"{engine}: unknown engine flavour {flavor!r}; {REBUILD}")
    sm = "SM" + gpu_cc.replace(".", "")
    if flavor == "rtx":
        supported = rtx_targets()
        if sm not in supported:
            raise BackendError(
                f"{engine}: TensorRT-RTX cannot run on this GPU ({sm}; it supports {', '.join(supported)}); use standard "
                "TensorRT: on this GPU run python export.py --ckpt CHECKPOINT --fp16 --flavor tensorrt"
            )
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


def gpu_modules(flavor: str) -> tuple[ModuleType, ModuleType]:
    """(tensorrt or tensorrt_rtx, cuda.bindings.runtime), or a BackendError naming the pip command."""
    try:
        trt = importlib.import_module(MODULES[flavor])
    except ImportError:
        extra = PIP if flavor == "rtx" else "pip install -e '.[tensorrt]', which needs NVIDIA's own package index"
        raise BackendError(f"{MODULES[flavor]} is not installed ({extra})") from None
    try:
        cudart = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        raise BackendError(f"cuda-python is not installed ({PIP})") from None
    return trt, cudart


# What the logger says when the cause is the driver, not the engine: advice then is the driver's.
_DRIVER_WORDS = ("driver version is insufficient", "cudaerror 35", "insufficient driver", "cuda driver")


def advice(reason: str, default: str) -> str:
    """`default` (usually: rebuild the engine), or driver advice when TensorRT's own reason is the driver."""
    if any(word in reason.lower() for word in _DRIVER_WORDS):
        return "update the NVIDIA driver (TensorRT says the driver is too old for it)"
    if "cudaerror" in reason.lower():  # CUDA failed reading the GPU (e.g. cudaError 801): no rebuild would help
        return DIAGNOSTIC_HINTS["CUDA_ERROR"]
    return default


def diagnostics(trt: ModuleType, bits: int) -> list[str]:
    """The names of the EngineInvalidityDiagnostics bits set in `bits`."""
    members = sorted(trt.EngineInvalidityDiagnostics.__members__.items(), key=lambda item: int(item[1]))
    return [name for name, flag in members if int(bits) & int(flag)]


@dataclass
class Lane:
    """One execution context, on an optimisation profile of its own, with its own stream and buffers: per I/O
    tensor name, pinned host memory, device memory, and a numpy view of the host memory. A lane runs one
    call at a time; each costs a context's activation memory and a set of buffers."""

    context: object = None
    stream: object = None
    host: dict[str, int] = field(default_factory=dict)
    device: dict[str, int] = field(default_factory=dict)
    views: dict[str, np.ndarray] = field(default_factory=dict)


class TensorRTBackend(Backend):
    def __init__(self, engine: Path) -> None:
        super().__init__()
        self.engine_path = Path(engine)
        self.sidecar = engine_sidecar(self.engine_path)
        self.flavor = self.sidecar["flavor"]
        self.name = "tensorrt-rtx" if self.flavor == "rtx" else "tensorrt"
        try:
            profile = next(iter(self.sidecar["profile"].values()))
            (_, _, h0, w0), (n1, _, h1, w1) = (tuple(map(int, profile[k])) for k in ("min", "max"))
            lanes = int(self.sidecar.get("profiles", 1))  # engines of earlier exports have one profile
            if lanes < 1:
                raise ValueError(lanes)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BackendError(f"{self.engine_path}: its sidecar's profile is malformed; {REBUILD}") from None
        self._limits = Limits(min_side=max(h0, w0), max_side=min(h1, w1), max_batch=n1, fixed_shape=True, concurrent=lanes)
        self._trt = self._cudart = None
        self._runtime = self._engine = self._runtime_config = self._runtime_cache = None
        self._lanes: list[Lane] = []
        self._idle: list[Lane] = []  # ready lanes not running a call
        self._ready = 0  # lanes set up and not yet released: 0 while none can take a call
        self._turn = threading.Condition()  # guards _idle and _ready
        self._dtypes: dict[str, type] = {}  # per I/O tensor, in the engine's order (known once activated)
        self._pixel_outputs = False  # the engine has sr_pixels / sr_sum
        # TensorRT-RTX at the last activate(): True when the runtime cache on disk was accepted (no JIT), False
        # when it was rejected (made for another GPU, driver or version), None when there was none.
        self.runtime_cache_accepted: bool | None = None

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def precision(self) -> str:
        return self.sidecar["precision"]

    @property
    def converts_pixels(self) -> bool:
        return self._pixel_outputs

    @property
    def runtime_cache_path(self) -> Path:
        return cache_dir() / "rtx-runtime" / f"{self.sidecar['engine_sha256'][:16]}.cache"

    def activate_impl(self) -> None:
        device = cuda_device()
        if device is None:
            raise BackendError(f"{self.name}: needs an NVIDIA GPU, and none was found")
        trt, cudart = gpu_modules(self.flavor)
        check_compatibility(self.engine_path, self.sidecar, trt.__version__, device.compute_capability)
        self._trt, self._cudart = trt, cudart
        self._load(device)  # on failure, Backend.activate releases what was made (deactivate_impl)
        self._allocate()

    def _load(self, device: CudaDevice) -> None:
        """Runtime, validity, engine, I/O check, runtime cache and contexts (api_usage.py's run_inference)."""
        trt, path = self._trt, self.engine_path
        logger = process_logger(trt)
        logger.reason()  # forget what earlier objects logged
        try:
            self._runtime = trt.Runtime(logger)
        except TypeError:  # pybind's answer when the C++ factory returns null: typically a driver too old
            raise BackendError(
                f"{MODULES[self.flavor]} {trt.__version__} cannot start on this driver (CUDA {device.driver}): "
                f"update the NVIDIA driver ({logger.reason() or 'no reason given'})"
            ) from None
        plan = path.read_bytes()
        if self.flavor == "rtx":
            validity, bits = self._runtime.get_engine_validity(plan)
            names = diagnostics(trt, bits)
            if validity == trt.EngineValidity.INVALID:
                # With no diagnostic bits the reason is only in the logger (tensorrt-notes: e.g. cudaError 35).
                reason = logger.reason()
                hints = dict.fromkeys(DIAGNOSTIC_HINTS.get(n, REBUILD) for n in names) or [advice(reason, REBUILD)]
                said = ", ".join(names + ([reason] if reason else [])) or "no reason given"
                raise BackendError(f"{path}: TensorRT-RTX cannot run it here ({said}); {'; '.join(hints)}")
            if validity == trt.EngineValidity.SUBOPTIMAL:
                warnings.warn(f"{path}: TensorRT-RTX says it runs suboptimally here ({', '.join(names)}); {REBUILD}", stacklevel=4)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            reason = logger.reason()
            raise BackendError(f"{path}: cannot deserialize ({reason or 'no reason given'}); {advice(reason, REBUILD)}")
        self._check_io()
        if self.flavor == "rtx":
            self._runtime_config = self._engine.create_runtime_config()
            if self._runtime_config is None:
                raise BackendError(f"{path}: TensorRT-RTX could not create a runtime config ({logger.reason()})")
            # TensorRT-RTX's own CUDA graphs ("Working with RTX CUDA Graphs", TensorRT-RTX documentation, 1.2
            # and later): a shape's kernels are captured once its specialised kernels are compiled, then
            # replayed, saving a launch per kernel. The tiler sends one tile shape and the buffers' addresses
            # never change, which is what replaying needs.
            self._runtime_config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            self._runtime_cache = self._runtime_config.create_runtime_cache()
            if self._runtime_cache is None:
                raise BackendError(f"{path}: TensorRT-RTX could not create a runtime cache ({logger.reason()})")
            on_disk = self.runtime_cache_path.is_file()
            cached = on_disk and bool(self._runtime_cache.deserialize(self.runtime_cache_path.read_bytes()))
            self.runtime_cache_accepted = cached if on_disk else None
            if not self._runtime_config.set_runtime_cache(self._runtime_cache):
                raise BackendError(f"{path}: TensorRT-RTX rejected its runtime cache ({logger.reason()})")
            if not cached:  # none yet, or made for another GPU, driver or version: the JIT compiles now
                print("compiling for this GPU (first run only)...", file=sys.stderr, flush=True)
        if self._engine.num_optimization_profiles != self._limits.concurrent:
            raise BackendError(
                f"{path}: the engine has {self._engine.num_optimization_profiles} optimisation profiles, its sidecar "
                f"says {self._limits.concurrent}; {REBUILD}"
            )
        for _ in range(self._limits.concurrent):
            self._lanes.append(Lane())
            if self.flavor == "rtx":
                self._lanes[-1].context = self._engine.create_execution_context(self._runtime_config)
            else:
                self._lanes[-1].context = self._engine.create_execution_context()
            if self._lanes[-1].context is None:
                raise BackendError(
                    f"{path}: no execution context (out of GPU memory, or kernel compilation failed: "
                    f"{logger.reason() or 'no reason given'})"
                )

    def _check_io(self) -> None:
        """The engine's I/O is FP32 `lr` in and `sr` out, with or without (an engine of an earlier export) the
        pixel outputs; anything else is refused."""
        trt = self._trt
        found = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            found[name] = (self._engine.get_tensor_mode(name), self._engine.get_tensor_dtype(name))
        expected = {INPUT_NAME: (trt.TensorIOMode.INPUT, trt.float32), OUTPUT_NAME: (trt.TensorIOMode.OUTPUT, trt.float32)}
        pixels = {PIXELS_OUT: (trt.TensorIOMode.OUTPUT, trt.uint8), CHECKSUM: (trt.TensorIOMode.OUTPUT, trt.float32)}
        if found not in (expected, expected | pixels):
            have = ", ".join(f"{n} {mode.name} {dtype.name}" for n, (mode, dtype) in found.items())
            raise BackendError(
                f"{self.engine_path}: expected FP32 input {INPUT_NAME} and output {OUTPUT_NAME} (and uint8 {PIXELS_OUT}, "
                f"FP32 {CHECKSUM}), found {have}; {REBUILD}"
            )
        self._pixel_outputs = found == expected | pixels
        self._dtypes = {name: np.uint8 if dtype == trt.uint8 else np.float32 for name, (_, dtype) in found.items()}

    def _cuda(self, result: tuple, what: str):
        """The value of a cuda-python call, or a BackendError naming the call and the CUDA error."""
        error, *value = result
        if error != self._cudart.cudaError_t.cudaSuccess:
            name = getattr(error, "name", str(error))
            if error == self._cudart.cudaError_t.cudaErrorMemoryAllocation:
                raise BackendError(f"{self.name}: out of GPU memory for {what} ({name}); free GPU memory or export a smaller --max-shape")
            raise BackendError(f"{self.name}: {what} failed ({name})")
        return value[0] if len(value) == 1 else None

    def _allocate(self) -> None:
        """Each lane's stream, its profile (lane i, profile i), and buffers for the profile's largest input, each
        output sized as its context says."""
        # TensorRT objects are only ever held on self (its lanes), never in locals: a traceback would keep them
        # alive past _release() and break the teardown order.
        cudart = self._cudart
        for index, lane in enumerate(self._lanes):
            lane.stream = self._cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
            if not lane.context.set_optimization_profile_async(index, int(lane.stream)):
                raise BackendError(f"{self.engine_path}: the engine refuses optimisation profile {index}; {REBUILD}")
            self._cuda(cudart.cudaStreamSynchronize(lane.stream), "cudaStreamSynchronize")  # the switch may copy
            largest = tuple(self._engine.get_tensor_profile_shape(INPUT_NAME, index)[2])
            if not lane.context.set_input_shape(INPUT_NAME, largest):
                raise BackendError(f"{self.engine_path}: the engine rejects its own largest input shape {largest}; {REBUILD}")
            for name, dtype in self._dtypes.items():
                size = math.prod(tuple(lane.context.get_tensor_shape(name))) * np.dtype(dtype).itemsize
                lane.host[name] = self._cuda(cudart.cudaMallocHost(size), f"{size >> 20} MiB of pinned memory for {name}")
                lane.device[name] = self._cuda(cudart.cudaMalloc(size), f"{size >> 20} MiB of device memory for {name}")
                lane.views[name] = np.ctypeslib.as_array((ctypes.c_ubyte * size).from_address(lane.host[name])).view(dtype)
                # Every I/O tensor needs an address, also an output a call does not copy back.
                if not lane.context.set_tensor_address(name, lane.device[name]):
                    raise BackendError(f"{self.engine_path}: set_tensor_address({name}) failed")
            with self._turn:
                self._idle.append(lane)
                self._ready += 1
                self._turn.notify()

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        def fill(pinned: np.ndarray) -> None:
            pinned[...] = batch

        return self._run(batch.shape, fill, (OUTPUT_NAME,))[0]

    def pixels_impl(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """8-bit tiles on an engine with pixel outputs: converted to float straight into the pinned input,
        bytes back; anything else through the host boundary around the float path."""
        if tiles.dtype != np.uint8 or not self._pixel_outputs:
            return super().pixels_impl(tiles)
        n, h, w, _ = tiles.shape
        pixels, checksums = self._run((n, 3, h, w), lambda pinned: to_model(tiles, out=pinned), (PIXELS_OUT, CHECKSUM))
        return pixels, nonfinite(checksums)

    def _run(self, shape: tuple[int, ...], fill: Callable[[np.ndarray], object], outputs: tuple[str, ...]) -> list[np.ndarray]:
        """In a free lane (waiting for one): set the input shape, let `fill` write the pinned input, copy it in,
        execute, copy `outputs` back, wait for the lane's stream: copies of them (the lane's pinned memory is
        reused by its next call). The wait releases the GIL, so another thread fills the other lane meanwhile."""
        lane = self._take()
        try:
            cudart, stream = self._cudart, lane.stream
            if not lane.context.set_input_shape(INPUT_NAME, shape):
                raise BackendError(f"{self.name}: the engine rejects input shape {shape} ({self.limits})")
            fill(lane.views[INPUT_NAME][: math.prod(shape)].reshape(shape))
            h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            size = math.prod(shape) * 4
            self._cuda(cudart.cudaMemcpyAsync(lane.device[INPUT_NAME], lane.host[INPUT_NAME], size, h2d, stream), "copy to the GPU")
            if not lane.context.execute_async_v3(int(stream)):
                raise BackendError(f"{self.name}: execute_async_v3 failed for shape {shape}")
            shapes = {name: tuple(lane.context.get_tensor_shape(name)) for name in outputs}
            for name, out_shape in shapes.items():
                size = math.prod(out_shape) * lane.views[name].itemsize
                self._cuda(cudart.cudaMemcpyAsync(lane.host[name], lane.device[name], size, d2h, stream), f"copy {name} from the GPU")
            self._cuda(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
            return [lane.views[name][: math.prod(out_shape)].reshape(out_shape).copy() for name, out_shape in shapes.items()]
        finally:
            with self._turn:
                self._idle.append(lane)
                self._turn.notify_all()

    def _take(self) -> Lane:
        """A lane not running a call, after waiting for one; BackendError once the backend is being released."""
        with self._turn:
            while self._ready and not self._idle:
                self._turn.wait()
            if not self._ready:
                raise BackendError(f"{self.name}: the backend was released while this call waited for a lane")
            return self._idle.pop()

    def _settle_lanes(self) -> None:
        """No call takes a lane from now on, and calls running finish first: their memory must not be freed
        under them. A signal that interrupts the wait (a second Ctrl-C) only makes it wait again; a call
        holds its lane for one tile at most."""
        with self._turn:
            ready, self._ready = self._ready, 0
            self._turn.notify_all()  # calls waiting for a lane give up
            while len(self._idle) < ready:
                try:
                    self._turn.wait()
                except BaseException:  # noqa: BLE001 - a signal's exception: the calls still run, so wait on
                    continue
            self._idle = []

    def _release(self) -> list[str]:
        """Free everything held: first let running calls finish (_settle_lanes) and wait for the streams
        (memory that execute_async_v3 may still use must not be freed before it is synchronised:
        tensorrt-notes, also on error and interrupt paths), then in
        TensorRT's order (context, runtime cache saved then freed with its config, engine, runtime), then the
        CUDA memory and stream; returns what failed, freeing the rest anyway. A runtime cache that cannot be
        saved is a warning (the next run compiles again), not a failure of this run."""
        failures = []
        cudart = self._cudart
        self._settle_lanes()
        for lane in self._lanes:
            if lane.stream is not None and (error := cudart.cudaStreamSynchronize(lane.stream)[0]) != cudart.cudaError_t.cudaSuccess:
                failures.append(f"cudaStreamSynchronize: {getattr(error, 'name', error)}")
        for lane in self._lanes:
            lane.context = None
        if self._runtime_cache is not None:
            blob = self._runtime_cache.serialize()
            try:
                if blob is not None:
                    self.runtime_cache_path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(self.runtime_cache_path, bytes(blob))
            except OSError as exc:
                warnings.warn(f"{self.name}: the runtime cache was not saved ({exc}); the next run compiles again", stacklevel=2)
        self._runtime_cache = self._runtime_config = None
        self._engine = self._runtime = None
        handles = []
        for lane in self._lanes:
            handles += [(pointer, "cudaFree") for pointer in lane.device.values()]
            handles += [(pointer, "cudaFreeHost") for pointer in lane.host.values()]
            handles += [(lane.stream, "cudaStreamDestroy")] if lane.stream is not None else []
            lane.views, lane.device, lane.host, lane.stream = {}, {}, {}, None
        self._lanes = []
        for handle, free in handles:
            if (error := getattr(cudart, free)(handle)[0]) != cudart.cudaError_t.cudaSuccess:
                failures.append(f"{free}: {getattr(error, 'name', error)}")
        return failures

    def deactivate_impl(self) -> None:
        if failures := self._release():
            raise BackendError(f"{self.name}: release failed: {'; '.join(failures)}")
