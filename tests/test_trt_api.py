"""The fake TensorRT-RTX / cuda-python pair cannot drift from the real packages: api.json is what the installed
packages expose, the fakes implement nothing the real classes lack, and the call checker rejects wrong calls."""

from __future__ import annotations

import json
import sys

import pytest

from tests.trt_api import fake
from tests.trt_api.extract import API_JSON, extract


def test_api_json_is_what_the_installed_packages_expose() -> None:
    recorded = json.loads(API_JSON.read_text())
    current = json.loads(json.dumps(extract()))
    # tensorrt_rtx is always here (the [rtx] extra); cuda-python where installed (the [gpu] extra).
    assert "tensorrt_rtx" in current
    for module, api in current.items():
        assert api == recorded[module], f"{module} changed: python -m tests.trt_api.extract, then review the fakes"


def _fake_classes() -> list[type]:
    found, todo = [], [fake.Checked]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.api_class:
            found.append(cls)
    return found


def test_fakes_implement_only_real_api(monkeypatch) -> None:
    fake.install(monkeypatch, fake.Scenario())  # defines the fake classes
    classes = _fake_classes()
    assert {c.api_class for c in classes} >= {"Runtime", "ICudaEngine", "IExecutionContext", "IRuntimeConfig", "IRuntimeCache"}
    for cls in classes:
        spec = fake.TRT_API["classes"][cls.api_class]
        for name in vars(cls):
            if not name.startswith("_") and name != "api_class":
                assert name in spec["methods"] or name in spec["properties"], f"{cls.api_class}.{name}"
    for name in vars(fake.FakeCudart):
        if name.startswith("_cuda"):
            assert name[1:] in fake.CUDA_API["functions"], name


def test_the_checker_rejects_calls_the_real_api_would_reject(monkeypatch) -> None:
    scenario = fake.Scenario()
    fake.install(monkeypatch, scenario)
    trt, cudart = sys.modules["tensorrt_rtx"], sys.modules["cuda.bindings.runtime"]
    logger = type("Logger", (trt.ILogger,), {"log": lambda self, severity, msg: None})()
    engine = trt.Runtime(logger).deserialize_cuda_engine(b"plan")
    context = engine.create_execution_context()
    assert context.set_input_shape("lr", (1, 3, 16, 16))
    with pytest.raises(AssertionError, match="matches no real signature"):
        context.set_input_shape("lr", 1, 3)
    with pytest.raises(AssertionError, match="matches no real signature"):
        context.execute_async_v3(stream_handle="not a handle")
    with pytest.raises(AttributeError, match="not in the real API"):
        engine.get_binding_index("lr")  # removed in TensorRT 10
    with pytest.raises(AssertionError, match="not a writable property"):
        engine.num_io_tensors = 3
    with pytest.raises(AssertionError, match="matches no real signature"):
        cudart.cudaMalloc(16, 0)
    with pytest.raises(AssertionError, match="not in the real API"):
        cudart.cudaMallocPitchy(16)
    error, pointer = cudart.cudaMallocHost(16)
    assert error == cudart.cudaError_t.cudaSuccess and cudart.cudaFreeHost(pointer) == (cudart.cudaError_t.cudaSuccess,)
