"""Every backend that runs here agrees with the PyTorch reference on real images, within stated bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.metrics import compare
from export.parity import THRESHOLDS, to_nchw
from runtime.backends.base import BackendError
from runtime.backends.choose import choose_backend
from runtime.backends.onnxruntime import ORTBackend
from runtime.backends.openvino import OpenVINOBackend
from runtime.backends.pytorch import TorchBackend
from runtime.model.source import Model

# OpenVINO pinned to f32 reorders sums (Winograd 3x3 convs): measured 1.7e-6 on Set5, like ORT's 8e-6.
FP32_BOUND = THRESHOLDS.fp32_max_abs


def backends(exported, weights_path):
    out = exported[0]
    return {
        "openvino": OpenVINOBackend(out / "lsanet_x4_fp32.onnx"),
        "onnxruntime-fp32": ORTBackend(out / "lsanet_x4_fp32.onnx", "fp32", "cpu"),
        "onnxruntime-fp16": ORTBackend(out / "lsanet_x4_fp16.onnx", "fp16", "cpu"),
        "torch": TorchBackend(weights_path, device="cpu"),
    }


@pytest.mark.parametrize("name", ["openvino", "onnxruntime-fp32", "onnxruntime-fp16", "torch"])
def test_backend_matches_pytorch_on_real_images(exported, weights_path, public_model, set5, photos, name) -> None:
    backend = backends(exported, weights_path)[name]
    with backend:
        for image, lr, _ in set5 + photos:
            x = to_nchw(lr)
            with torch.no_grad():
                reference = public_model(torch.from_numpy(x)).numpy()
            result = compare(reference, backend.infer(x))
            assert result.nonfinite == 0
            if name == "onnxruntime-fp16":
                clamped = compare(np.clip(reference, 0, 1), np.clip(backend.infer(x), 0, 1))
                assert clamped.psnr >= THRESHOLDS.fp16_min_psnr and clamped.max_abs <= THRESHOLDS.fp16_max_abs, image
            else:
                assert result.max_abs <= FP32_BOUND, (name, image, result)


def test_interface_checks_batches(exported, weights_path) -> None:
    backend = backends(exported, weights_path)["onnxruntime-fp32"]
    with pytest.raises(BackendError, match="before activate"):
        backend.infer(np.zeros((1, 3, 16, 16), np.float32))
    with backend:
        with pytest.raises(ValueError, match="float32"):
            backend.infer(np.zeros((1, 3, 16, 16), np.float64))
        with pytest.raises(ValueError, match="outside the sides"):
            backend.infer(np.zeros((1, 3, 8, 16), np.float32))
        out = backend.infer(np.zeros((3, 3, 16, 20), np.float32))
        assert out.shape == (3, 3, 64, 80)


def test_an_fp16_choice_comes_with_an_fp32_fallback(exported) -> None:
    out = exported[0]
    model = Model("test", onnx={"fp32": out / "lsanet_x4_fp32.onnx", "fp16": out / "lsanet_x4_fp16.onnx"},
                  canary=out / "lsanet_x4_canary.npz")  # fmt: skip
    fp16 = choose_backend("onnxruntime", model, "fp16")
    fp32 = choose_backend("openvino", model)
    try:
        assert fp16.fallback is not None and fp16.fallback.precision == "fp32" and not fp16.fallback.active
        assert fp32.fallback is None
    finally:
        fp16.backend.deactivate()
        fp32.backend.deactivate()


def test_auto_picks_openvino_without_a_gpu_and_says_why(exported) -> None:
    from core.nvidia import cuda_device

    if cuda_device() is not None:
        pytest.skip("a GPU is present: auto picks a GPU backend (tests/test_trt_runtime.py)")
    out = exported[0]
    model = Model("test", onnx={"fp32": out / "lsanet_x4_fp32.onnx", "fp16": out / "lsanet_x4_fp16.onnx"},
                  engines={"rtx": out / "lsanet_x4_fp16.rtx.engine"})  # fmt: skip
    choice = choose_backend("auto", model)
    choice.backend.deactivate()
    assert choice.backend.name == "openvino" and "fastest CPU backend" in choice.reason
    assert any("tensorrt-rtx: no NVIDIA GPU found" in line for line in choice.skipped)


def test_explicit_backend_that_cannot_run_says_why(exported) -> None:
    model = Model("test", onnx={"fp32": exported[0] / "lsanet_x4_fp32.onnx"})
    # Every entry named torch is tried (torch-cuda first, on a GPU), each reason given.
    with pytest.raises(BackendError, match="backend torch cannot run: .*needs a checkpoint"):
        choose_backend("torch", model)
    with pytest.raises(BackendError, match="backend tensorrt-rtx cannot run"):
        choose_backend("tensorrt-rtx", model)


def test_a_load_that_fails_part_way_is_released(exported, monkeypatch) -> None:
    """ONNX Runtime's 8-bit session fails to load after its float session did: the float session is let go
    before the error goes on (else it lives as long as the discarded backend)."""
    backend = ORTBackend(exported[0] / "lsanet_x4_fp32.onnx", "fp32", "cpu", graph_boundary=True)
    load = ORTBackend._cpu_session

    def float_only(self, graph):
        if isinstance(graph, bytes):  # the wrapped graph, built in memory
            raise BackendError("onnxruntime: cannot load the wrapped graph (injected)")
        return load(self, graph)

    monkeypatch.setattr(ORTBackend, "_cpu_session", float_only)
    with pytest.raises(BackendError, match="injected"):
        backend.activate()
    assert not backend.active and backend._session is None and backend.providers == []


def test_a_release_that_fails_after_a_failed_load_does_not_hide_the_loads_error(exported, monkeypatch) -> None:
    backend = ORTBackend(exported[0] / "missing.onnx", "fp32", "cpu")

    def broken_release(self) -> None:
        raise BackendError("release failed (injected)")

    monkeypatch.setattr(ORTBackend, "deactivate_impl", broken_release)
    with pytest.warns(UserWarning, match=r"releasing a failed load failed too: release failed \(injected\)"):
        with pytest.raises(BackendError, match="cannot load .*missing.onnx"):
            backend.activate()


def test_an_openvino_request_that_cannot_be_made_is_a_backend_error(exported, monkeypatch) -> None:
    """So that `auto` goes on to the next backend; and nothing of the failed load is kept."""
    import openvino as ov

    def no_memory(self):
        raise RuntimeError("Exception from src/inference: out of memory (injected)")

    monkeypatch.setattr(ov.CompiledModel, "create_infer_request", no_memory)
    backend = OpenVINOBackend(exported[0] / "lsanet_x4_fp32.onnx")
    with pytest.raises(BackendError, match=r"cannot create an inference request .*out of memory \(injected\)"):
        backend.activate()
    assert not backend.active and backend._compiled is None and backend._request is None
