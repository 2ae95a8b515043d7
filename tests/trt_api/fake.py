"""A fake `tensorrt_rtx` / `cuda.bindings.runtime` pair that stands in for the GPU in the contract tests.

Every attribute a fake object is asked for must exist on the real class, and every call must bind to one of
the real overloads (parameter names, arity, simple types), all read from api.json (tests/trt_api/extract.py
introspects the installed packages), so code that passes against the fake calls the API NVIDIA ships. The
enums, the version and the constants come from api.json too. Memory is real host memory (ctypes buffers)
so copies and the fake "network" (nearest-neighbour x4) really move data. What the scenario asks for goes
wrong; everything that is created, freed or serialized is appended to `events`, and so is every use of a
stream (a copy, an execution, a synchronisation). A stream is usable from its creation to its destruction
only: outside that a call on it fails, as with real CUDA.
"""

from __future__ import annotations

import ctypes
import enum
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import numpy as np

API = json.loads(Path(__file__).with_name("api.json").read_text())
TRT_API, CUDA_API = API["tensorrt_rtx"], API["cuda.bindings.runtime"]
SIMPLE_TYPES = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "typing.SupportsInt": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "tuple": lambda v: isinstance(v, tuple),
    "list": lambda v: isinstance(v, list),
    "typing_extensions.Buffer": lambda v: isinstance(v, (bytes, bytearray, memoryview)),
}


def _type_ok(value: object, annotation: str, has_default: bool) -> bool:
    """Whether `value` can be passed where the real signature says `annotation`."""
    if annotation in SIMPLE_TYPES:
        return SIMPLE_TYPES[annotation](value)
    real_class = annotation.replace("::", ".").split(".")[-1]
    if real_class in TRT_API["classes"]:
        return (value is None and has_default) or getattr(type(value), "api_class", None) == real_class
    enums = {name.split(".")[-1]: name for name in TRT_API["enums"]}
    if real_class in enums:
        return isinstance(value, FakeTrt.enums[enums[real_class]])
    # A type the fake does not model (e.g. Dims): names and arity are still checked, and no other fake fits.
    return getattr(type(value), "api_class", None) in (None, real_class)


def bind(where: str, overloads: list[dict], args: tuple, kwargs: dict) -> None:
    """Raise AssertionError unless (args, kwargs) fit one real overload of `where`."""
    for overload in overloads:
        parameters = [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None if default else inspect.Parameter.empty)
            for name, _annotation, default in overload["params"]
        ]
        try:
            bound = inspect.Signature(parameters).bind(*args, **kwargs)
        except TypeError:
            continue
        types = {name: (annotation, default) for name, annotation, default in overload["params"]}
        if all(_type_ok(value, *types[name]) for name, value in bound.arguments.items()):
            return
    raise AssertionError(f"{where}{args!r} {kwargs!r} matches no real signature: {[o['params'] for o in overloads]}")


class Checked:
    """Base of the fake TensorRT objects: only the real class's attributes, only calls that fit its overloads."""

    api_class = ""

    def __getattribute__(self, name: str) -> object:
        if name.startswith("_") or name == "api_class":
            return object.__getattribute__(self, name)
        spec = TRT_API["classes"][type(self).api_class]
        where = f"{type(self).api_class}.{name}"
        if name not in spec["methods"] and name not in spec["properties"]:
            raise AttributeError(f"{where} is not in the real API ({TRT_API['version']})")
        value = object.__getattribute__(self, name)  # AttributeError where the fake does not model it
        if name in spec["methods"]:
            def checked(*args: object, **kwargs: object) -> object:
                bind(where, spec["methods"][name], args, kwargs)
                return value(*args, **kwargs)

            return checked
        return value

    def __setattr__(self, name: str, value: object) -> None:
        if not name.startswith("_"):
            access = TRT_API["classes"][type(self).api_class]["properties"].get(name)
            assert access == "rw", f"{type(self).api_class}.{name} is not a writable property of the real API"
        object.__setattr__(self, name, value)

    def __del__(self) -> None:
        if scenario := self.__dict__.get("_scenario"):
            scenario.events.append(f"del {type(self).api_class}")


@dataclass
class Scenario:
    """What the fake GPU does; the defaults are a healthy RTX 4090 with everything succeeding."""

    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] = ((1, 3, 16, 16), (1, 3, 384, 384), (1, 3, 512, 512))
    runtime_type_error: bool = False  # trt.Runtime() as with a driver too old: pybind's TypeError
    validity: str = "VALID"
    diagnostics: tuple[str, ...] = ()
    deserialize_none: bool = False
    context_none: bool = False
    set_input_shape: bool = True
    output_dtype: str = "FLOAT"
    # The engine also has the pixel outputs sr_pixels / sr_sum (an engine of this exporter); `swapped_pixels`:
    # they come back in BGR order, as a wrong boundary in the graph would give.
    pixel_outputs: bool = True
    swapped_pixels: bool = False
    in_execute: Callable[[], object] | None = None  # called inside execute_async_v3 (a barrier, a wait)
    executed_on: list[int] = field(default_factory=list)  # the stream of each execute_async_v3
    profiles: int = 2  # the engine's optimisation profiles (this exporter builds two copies of one)
    contexts: int = 0  # made so far: the first gets profile 0 implicitly, the others none until set
    running: dict[int, int] = field(default_factory=dict)  # profile -> executions in progress
    cache_accepts: bool = True  # IRuntimeCache.deserialize's answer
    out_of_memory_at: int | None = None  # fail the n-th (0-based) cudaMalloc / cudaMallocHost
    events: list[str] = field(default_factory=list)
    allocations: dict[int, ctypes.Array] = field(default_factory=dict)
    mallocs: int = 0
    streams: set[int] = field(default_factory=set)  # created and not destroyed yet
    copies: list[tuple[str, int]] = field(default_factory=list)  # (cudaMemcpyKind name, bytes) of each copy

    def io_names(self) -> tuple[str, ...]:
        return ("lr", "sr", "sr_pixels", "sr_sum") if self.pixel_outputs else ("lr", "sr")

    def use_stream(self, stream: int, what: str) -> bool:
        """Record `what` on `stream`; False when the stream is not (or no longer) alive."""
        self.events.append(what)
        return int(stream) in self.streams


class FakeTrt:
    """Builds the fake tensorrt_rtx module for a scenario."""

    enums: ClassVar[dict[str, type[enum.IntEnum]]] = {name: enum.IntEnum(name.split(".")[-1], members) for name, members in TRT_API["enums"].items()}

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def module(self) -> ModuleType:
        s, enums = self.scenario, self.enums
        data_type = enums["DataType"]

        class Base(Checked):
            def __init__(self) -> None:
                object.__setattr__(self, "_scenario", s)

        class ILogger:  # subclassed by the code under test, so not Checked: only its constructor is
            api_class = "ILogger"
            Severity = enums["ILogger.Severity"]

            def __init__(self) -> None:
                bind("ILogger.__init__", TRT_API["classes"]["ILogger"]["methods"]["__init__"], (), {})

        class IRuntimeCache(Base):
            api_class = "IRuntimeCache"

            def deserialize(self, blob: bytes) -> bool:
                s.events.append("deserialize IRuntimeCache")
                return s.cache_accepts

            def serialize(self) -> bytes:
                s.events.append("serialize IRuntimeCache")
                return b"fake runtime cache"

        class IRuntimeConfig(Base):
            api_class = "IRuntimeConfig"

            def create_runtime_cache(self) -> IRuntimeCache:
                return IRuntimeCache()

            def set_runtime_cache(self, cache: IRuntimeCache | None = None) -> bool:
                return True

            def __setattr__(self, name: str, value: object) -> None:
                super().__setattr__(name, value)
                if name == "cuda_graph_strategy":  # the real property takes only its enum
                    assert isinstance(value, enums["CudaGraphStrategy"]), value
                s.events.append(f"set IRuntimeConfig.{name} {getattr(value, 'name', value)}")

        class IExecutionContext(Base):
            api_class = "IExecutionContext"

            def __init__(self) -> None:
                super().__init__()
                object.__setattr__(self, "_shape", None)
                object.__setattr__(self, "_addresses", {})
                object.__setattr__(self, "_profile", 0 if s.contexts == 0 else None)
                s.contexts += 1

            def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
                if not s.use_stream(stream_handle, "set_optimization_profile_async") or not 0 <= profile_index < s.profiles:
                    return False
                object.__setattr__(self, "_profile", profile_index)
                return True

            def set_input_shape(self, name: str, shape: tuple) -> bool:
                ok = s.set_input_shape and all(a <= b <= c for a, b, c in zip(s.profile[0], shape, s.profile[2]))
                if ok:
                    object.__setattr__(self, "_shape", tuple(shape))
                return ok

            def get_tensor_shape(self, name: str) -> tuple:
                n, c, h, w = self._shape
                shapes = {"lr": (n, c, h, w), "sr": (n, c, 4 * h, 4 * w), "sr_pixels": (n, 4 * h, 4 * w, c), "sr_sum": (n,)}
                return shapes[name]

            def set_tensor_address(self, name: str, memory: int) -> bool:
                self._addresses[name] = memory
                return memory in s.allocations

            def execute_async_v3(self, stream_handle: int) -> bool:
                if not s.use_stream(stream_handle, "execute_async_v3"):
                    return False
                if set(self._addresses) != set(s.io_names()):  # TensorRT refuses to run with an address unset
                    return False
                # Concurrent contexts of a dynamic-shape engine must each use a separate optimisation profile
                # (NvInferRuntime.h); the real one would compute garbage, the fake refuses.
                if self._profile is None or s.running.get(self._profile):
                    return False
                s.running[self._profile] = 1
                try:
                    s.executed_on.append(int(stream_handle))
                    if s.in_execute is not None:
                        s.in_execute()
                finally:
                    s.running[self._profile] = 0

                def tensor(name: str, ctype: type) -> np.ndarray:
                    shape = self.get_tensor_shape(name)
                    count = int(np.prod(shape))
                    return np.ctypeslib.as_array((ctype * count).from_address(self._addresses[name])).reshape(shape)

                y = tensor("sr", ctypes.c_float)
                y[...] = nearest_x4(tensor("lr", ctypes.c_float))
                if s.pixel_outputs:  # written out here, not by core/boundary.py: the fake must not be the code under test
                    with np.errstate(invalid="ignore"):  # NaN cast to bytes: meaningless, and flagged by the sum
                        pixels = np.rint(np.clip(y * np.float32(255), 0, 255)).astype(np.uint8).transpose(0, 2, 3, 1)
                    tensor("sr_pixels", ctypes.c_ubyte)[...] = pixels[..., ::-1] if s.swapped_pixels else pixels
                    tensor("sr_sum", ctypes.c_float)[...] = y.sum(axis=(1, 2, 3))
                return True

        class ICudaEngine(Base):
            api_class = "ICudaEngine"

            @property
            def num_io_tensors(self) -> int:
                return len(s.io_names())

            @property
            def num_optimization_profiles(self) -> int:
                return s.profiles

            def get_tensor_name(self, index: int) -> str:
                return s.io_names()[index]

            def get_tensor_mode(self, name: str):
                return enums["TensorIOMode"]["INPUT" if name == "lr" else "OUTPUT"]

            def get_tensor_dtype(self, name: str):
                return data_type[{"lr": "FLOAT", "sr": s.output_dtype, "sr_pixels": "UINT8", "sr_sum": "FLOAT"}[name]]

            def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
                assert 0 <= profile_index < s.profiles, profile_index
                return [tuple(shape) for shape in s.profile]

            def create_runtime_config(self) -> IRuntimeConfig:
                return IRuntimeConfig()

            def create_execution_context(self, runtime_config: IRuntimeConfig | None = None) -> IExecutionContext | None:
                s.events.append("create IExecutionContext")
                return None if s.context_none else IExecutionContext()

        class Runtime(Base):
            api_class = "Runtime"

            def __init__(self, logger: ILogger) -> None:
                bind("Runtime.__init__", TRT_API["classes"]["Runtime"]["methods"]["__init__"], (logger,), {})
                if s.runtime_type_error:
                    raise TypeError("pybind11::init(): factory function returned nullptr")
                super().__init__()
                object.__setattr__(self, "_logger", logger)

            def get_engine_validity(self, buffer: bytes) -> tuple:
                bits = sum(TRT_API["enums"]["EngineInvalidityDiagnostics"][name] for name in s.diagnostics)
                return enums["EngineValidity"][s.validity], bits

            def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
                if s.deserialize_none:
                    self._logger.log(ILogger.Severity.ERROR, "Error Code 1: Serialization (fake reason)")
                    return None
                return ICudaEngine()

        module = ModuleType("tensorrt_rtx")
        module.__version__ = TRT_API["version"]
        for name, cls in (("ILogger", ILogger), ("Runtime", Runtime)):
            setattr(module, name, cls)
        for name, value in enums.items():
            if "." not in name:
                setattr(module, name, value)
        for name, (enum_name, member) in TRT_API["constants"].items():
            setattr(module, name, enums[enum_name][member])
        return module


class FakeCudart(ModuleType):
    """The fake cuda.bindings.runtime: only the real functions, called with their real parameters."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__("cuda.bindings.runtime")
        self._scenario = scenario
        self.cudaError_t = enum.IntEnum("cudaError_t", CUDA_API["enums"]["cudaError_t"])
        self.cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", CUDA_API["enums"]["cudaMemcpyKind"])

    def __getattribute__(self, name: str) -> object:
        if not name.startswith("cuda") or name in ("cudaError_t", "cudaMemcpyKind"):
            return super().__getattribute__(name)
        params = CUDA_API["functions"].get(name)
        assert params is not None, f"cuda.bindings.runtime.{name} is not in the real API ({CUDA_API['version']})"
        implementation = super().__getattribute__("_" + name)

        def checked(*args: object, **kwargs: object) -> tuple:
            overload = {"params": [[p, "", default] for p, default in params]}
            bind(f"cudart.{name}", [overload], args, kwargs)
            return implementation(*args, **kwargs)

        return checked

    def _allocate(self, size: int, what: str) -> tuple:
        s = self._scenario
        s.mallocs += 1
        if s.out_of_memory_at == s.mallocs - 1:
            return (self.cudaError_t.cudaErrorMemoryAllocation, 0)
        buffer = (ctypes.c_char * size)()
        s.allocations[ctypes.addressof(buffer)] = buffer
        s.events.append(what)
        return (self.cudaError_t.cudaSuccess, ctypes.addressof(buffer))

    def _release(self, pointer: int, what: str) -> tuple:
        s = self._scenario
        if s.allocations.pop(pointer, None) is None:
            return (self.cudaError_t.cudaErrorInvalidValue,)
        s.events.append(what)
        return (self.cudaError_t.cudaSuccess,)

    def _cudaMalloc(self, size: int) -> tuple:
        return self._allocate(size, "cudaMalloc")

    def _cudaMallocHost(self, size: int) -> tuple:
        return self._allocate(size, "cudaMallocHost")

    def _cudaFree(self, devPtr: int) -> tuple:
        return self._release(devPtr, "cudaFree")

    def _cudaFreeHost(self, ptr: int) -> tuple:
        return self._release(ptr, "cudaFreeHost")

    def _cudaStreamCreate(self) -> tuple:
        s = self._scenario
        stream = 7 + len(s.streams)
        s.streams.add(stream)
        s.events.append("cudaStreamCreate")
        return (self.cudaError_t.cudaSuccess, stream)

    def _cudaStreamDestroy(self, stream: int) -> tuple:
        s = self._scenario
        if int(stream) not in s.streams:
            return (self.cudaError_t.cudaErrorInvalidResourceHandle,)
        s.streams.discard(int(stream))
        s.events.append("cudaStreamDestroy")
        return (self.cudaError_t.cudaSuccess,)

    def _cudaStreamSynchronize(self, stream: int) -> tuple:
        if not self._scenario.use_stream(stream, "cudaStreamSynchronize"):
            return (self.cudaError_t.cudaErrorInvalidResourceHandle,)
        return (self.cudaError_t.cudaSuccess,)

    def _cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: int, stream: int) -> tuple:
        assert isinstance(kind, self.cudaMemcpyKind), kind
        if not self._scenario.use_stream(stream, "cudaMemcpyAsync"):
            return (self.cudaError_t.cudaErrorInvalidResourceHandle,)
        self._scenario.copies.append((kind.name, count))
        ctypes.memmove(dst, src, count)
        return (self.cudaError_t.cudaSuccess,)


def install(monkeypatch, scenario: Scenario) -> None:
    """Put the fake pair where `import tensorrt_rtx` and `import cuda.bindings.runtime` look first."""
    cudart = FakeCudart(scenario)
    bindings = ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda = ModuleType("cuda")
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", FakeTrt(scenario).module())
    for name, module in (("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, module)


def nearest_x4(batch: np.ndarray) -> np.ndarray:
    """What the fake network computes, for checking that data went there and back."""
    return batch.repeat(4, axis=2).repeat(4, axis=3)

