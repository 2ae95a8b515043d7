"""Extract the Python API of the real `tensorrt_rtx` and `cuda.bindings.runtime` into api.json, so the fakes
in tests/trt_api/fake.py are checked against what NVIDIA ships, not against what we remember.

Run after upgrading either package: python -m tests.trt_api.extract (tests/test_trt_api.py fails until then).
pybind11 methods carry their signatures (every overload) only in their docstrings; the Cython functions of
cuda.bindings have real inspect signatures. Only the classes the project uses are kept.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path
from types import ModuleType

API_JSON = Path(__file__).with_name("api.json")
TRT_CLASSES = (
    "Builder", "IBuilderConfig", "INetworkDefinition", "OnnxParser", "IOptimizationProfile", "ITensor", "ILayer",
    "Runtime", "ICudaEngine", "IExecutionContext", "IRuntimeConfig", "IRuntimeCache", "IHostMemory", "ILogger",
    "IProgressMonitor",
)  # fmt: skip
TRT_ENUMS = (
    "ComputeCapability", "DataType", "EngineInvalidityDiagnostics", "EngineValidity", "LayerType",
    "MemoryPoolType", "NetworkDefinitionCreationFlag", "TensorIOMode", "ILogger.Severity", "CudaGraphStrategy",
)  # fmt: skip
TRT_CONSTANTS = ("float32", "float16", "uint8")
CUDA_ENUMS = ("cudaError_t", "cudaMemcpyKind")
_SIGNATURE = re.compile(r"^(?:\d+\. )?(\w+)\((.*)\) -> (.+)$")


def _split_params(text: str) -> list[str]:
    """Split 'a: X, b: Y = <E.V: 0>' at the commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[(<":
            depth += 1
        elif char in "])>":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*parts, current.strip()] if p]


def pybind_overloads(doc: str) -> list[dict]:
    """Each overload in a pybind11 docstring: parameters (name, type, has default) after self, and return type."""
    overloads = []
    for line in doc.splitlines():
        match = _SIGNATURE.match(line.strip())
        if not match:
            continue
        params = []
        for part in _split_params(match.group(2)):
            name, _, rest = part.partition(": ")
            params.append([name, rest.split(" = ")[0], " = " in rest])
        overloads.append({"params": params[1:] if params and params[0][0] == "self" else params, "returns": match.group(3)})
    return overloads


def _enum(cls: type) -> dict[str, int]:
    return {name: int(value) for name, value in cls.__members__.items()}


def _attr(module: ModuleType, dotted: str) -> object:
    value: object = module
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def tensorrt_api(trt: ModuleType) -> dict:
    classes = {}
    for name in TRT_CLASSES:
        cls = getattr(trt, name)
        methods, properties = {}, {}
        for attr, value in vars(cls).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            if isinstance(value, property):
                properties[attr] = "rw" if value.fset is not None else "ro"
            elif callable(value) and (overloads := pybind_overloads(value.__doc__ or "")):
                methods[attr] = overloads
        classes[name] = {"methods": methods, "properties": properties}
    return {
        "version": trt.__version__,
        "classes": classes,
        "enums": {name: _enum(_attr(trt, name)) for name in TRT_ENUMS},
        "constants": {name: [type(getattr(trt, name)).__name__, getattr(trt, name).name] for name in TRT_CONSTANTS},
    }


def cuda_api(cudart: ModuleType, version: str) -> dict:
    functions = {}
    for name, value in vars(cudart).items():
        if name.startswith("cuda") and callable(value) and not inspect.isclass(value):
            parameters = inspect.signature(value).parameters.values()
            functions[name] = [[p.name, p.default is not inspect.Parameter.empty] for p in parameters]
    return {"version": version, "functions": functions, "enums": {name: _enum(getattr(cudart, name)) for name in CUDA_ENUMS}}


def extract() -> dict:
    """The API of every module that is installed here (cuda-python is optional outside GPU machines)."""
    api = {"tensorrt_rtx": tensorrt_api(importlib.import_module("tensorrt_rtx"))}
    try:
        cuda_bindings = importlib.import_module("cuda.bindings")
        api["cuda.bindings.runtime"] = cuda_api(importlib.import_module("cuda.bindings.runtime"), cuda_bindings.__version__)
    except ImportError:
        pass
    return api


if __name__ == "__main__":
    api = extract()
    if "cuda.bindings.runtime" not in api:
        raise SystemExit("install cuda-bindings (pip install 'cuda-bindings>=12.8,<13') to extract its API too")
    API_JSON.write_text(json.dumps(api, indent=1, sort_keys=True) + "\n")
    print(f"wrote {API_JSON}: tensorrt_rtx {api['tensorrt_rtx']['version']}, cuda-bindings {api['cuda.bindings.runtime']['version']}")
