"""TensorRT engines at run time: the checks made before deserializing run everywhere; execution and its
parity (PyTorch vs ONNX vs engine, FP16 thresholds) need an NVIDIA GPU and skip without one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export.cuda_device import cuda_device
from export.metrics import compare
from export.parity import THRESHOLDS, to_nchw
from runtime.backend import BackendError
from runtime.trt_backend import TensorRTBackend, check_compatibility, read_sidecar


@pytest.fixture
def engine(exported, tmp_path: Path) -> Path:
    for name in ("lsanet_x4_fp16.rtx.engine", "lsanet_x4_fp16.rtx.json"):
        shutil.copy(exported[0] / name, tmp_path / name)
    return tmp_path / "lsanet_x4_fp16.rtx.engine"


def test_sidecar_must_match_the_engine(engine: Path) -> None:
    sidecar = read_sidecar(engine)
    assert sidecar["flavor"] == "rtx"
    engine.write_bytes(engine.read_bytes() + b"\0")
    with pytest.raises(BackendError, match="does not match its sidecar"):
        read_sidecar(engine)
    engine.with_suffix(".json").unlink()
    with pytest.raises(BackendError, match="no sidecar"):
        read_sidecar(engine)


def test_compatibility_messages_say_what_to_rebuild(engine: Path) -> None:
    sidecar = read_sidecar(engine)
    version = sidecar["version"]
    check_compatibility(engine, sidecar, version, "8.9")
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        check_compatibility(engine, sidecar, version, None)
    with pytest.raises(BackendError, match=r"built for SM86, SM89, SM120, this GPU is SM75; .*--compute-capability SM75"):
        check_compatibility(engine, sidecar, version, "7.5")
    with pytest.raises(BackendError, match=r"built with TensorRT-RTX .*installed 2\.0"):
        check_compatibility(engine, sidecar, "2.0.0", "8.9")
    with pytest.raises(BackendError, match="not installed"):
        check_compatibility(engine, sidecar, None, "8.9")
    standard = dict(sidecar, flavor="tensorrt", version="10.13.0", target_compute_capabilities=["SM89"])
    with pytest.raises(BackendError, match="built with TensorRT 10.13.0, installed 10.14.1"):
        check_compatibility(engine, standard, "10.14.1", "8.9")
    with pytest.raises(BackendError, match="this GPU is SM86"):
        check_compatibility(engine, standard, "10.13.0", "8.6")
    check_compatibility(engine, dict(standard, target_compute_capabilities=["AMPERE_PLUS"]), "10.13.0", "8.6")


def test_limits_come_from_the_profile(engine: Path) -> None:
    backend = TensorRTBackend(engine)
    assert (backend.limits.min_side, backend.limits.max_side, backend.limits.max_batch) == (16, 512, 8)
    assert backend.precision == "fp16"


def test_activation_without_a_gpu_is_a_clear_error(engine: Path) -> None:
    if cuda_device() is not None:
        pytest.skip("a GPU is present: covered by the execution tests below")
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        TensorRTBackend(engine).activate()


needs_gpu = pytest.mark.skipif(
    cuda_device() is None,
    reason="TensorRT engine execution needs an NVIDIA GPU and none is here (engines are still built and checked)",
)


@needs_gpu
def test_engine_matches_pytorch_and_onnx_on_real_images(exported, public_model, set5, photos) -> None:
    from runtime.ort_backend import ORTBackend

    out = exported[0]
    with TensorRTBackend(out / "lsanet_x4_fp16.rtx.engine") as trt, ORTBackend(out / "lsanet_x4_fp32.onnx", device="cpu") as ort:
        for name, lr, _ in set5 + photos:
            x = to_nchw(lr)
            with torch.no_grad():
                reference = np.clip(public_model(torch.from_numpy(x)).numpy(), 0, 1)
            engine_out = trt.infer(x)
            for other in (reference, np.clip(ort.infer(x), 0, 1)):
                result = compare(other, np.clip(engine_out, 0, 1))
                assert result.nonfinite == 0, name
                assert result.psnr >= THRESHOLDS.fp16_min_psnr and result.max_abs <= THRESHOLDS.fp16_max_abs, (name, result)


@needs_gpu
def test_engine_runs_batches_and_profile_extremes_and_keeps_its_runtime_cache(exported, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path))
    backend = TensorRTBackend(exported[0] / "lsanet_x4_fp16.rtx.engine")
    with backend:
        for shape in ((1, 3, 16, 16), (8, 3, 64, 48), (1, 3, 512, 512)):
            out = backend.infer(np.random.default_rng(0).random(shape, dtype=np.float32))
            assert out.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4) and np.isfinite(out).all()
    assert backend.runtime_cache_path.is_file() and backend.runtime_cache_path.stat().st_size > 0


def test_engine_json_is_what_the_manifest_lists(exported) -> None:
    manifest = json.loads((exported[0] / "manifest.json").read_text())
    sidecars = [a for a in manifest["artifacts"] if a["kind"] == "sidecar"]
    assert sidecars and all((exported[0] / a["file"]).is_file() for a in sidecars)
