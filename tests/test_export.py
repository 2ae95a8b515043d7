"""export.py end to end: ONNX files, a real TensorRT-RTX engine with its sidecar, the manifest, atomicity."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest

import export.pipeline as pipeline
from core.artifacts import load_manifest
from core.errors import DeployError
from core.files import sha256_file
from export.fp16 import to_fp16
from export.parity import ParityError
from export.pipeline import ExportConfig, run_export
from export.trt_build import EngineBuildError, Profile, build_engine
from tests.conftest import run_script

SIDECAR_KEYS = {
    "flavor", "module", "version", "onnx_sha256", "opset", "precision", "profile", "profiles", "io",
    "target_compute_capabilities", "build_options", "gpu", "engine_sha256", "engine_bytes", "build_key",
}  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_script("export.py", *args)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_cli_reports_artifacts_parity_times_and_skips(exported) -> None:
    out = exported[1].stdout
    for text in ("lsanet_x4_fp32.onnx", "lsanet_x4_fp16.onnx", "lsanet_x4_fp16.rtx.engine", "parity gate", "PSNR", "bf16-vs-fp32"):
        assert text in out
    from export.trt_build import flavor_status

    reason = flavor_status("tensorrt")  # standard TensorRT builds only with its package and a GPU
    assert (f"tensorrt engine: skipped ({reason})" in out) if reason else ("lsanet_x4_fp16.tensorrt.engine" in out)
    assert exported[1].stderr.strip() == ""


def test_manifest_matches_the_files(exported, weights_path: Path) -> None:
    out = exported[0]
    manifest = load_manifest(out)
    assert manifest["checkpoint"]["sha256"] == sha256_file(weights_path)
    assert manifest["parity"]["passed"]
    assert {"torch", "onnx", "onnxruntime", "tensorrt-rtx-cu12"} <= manifest["tools"].keys()
    files = {a["file"]: a for a in manifest["artifacts"]}
    assert {"lsanet_x4_fp32.onnx", "lsanet_x4_fp16.onnx", "lsanet_x4_fp16.rtx.engine", "lsanet_x4_fp16.rtx.json"} <= files.keys()
    for name, artifact in files.items():
        assert sha256_file(out / name) == artifact["sha256"], name
    assert not list(out.glob(".staging-*")) and not list(out.glob(".*.part*"))


def test_rtx_engine_and_sidecar_are_complete_and_consistent(exported) -> None:
    out = exported[0]
    manifest = load_manifest(out)
    sidecar = json.loads((out / "lsanet_x4_fp16.rtx.json").read_text())
    assert sidecar.keys() >= SIDECAR_KEYS
    fp16_onnx = next(a for a in manifest["artifacts"] if a["file"] == "lsanet_x4_fp16.onnx")
    engine = next(a for a in manifest["artifacts"] if a["file"] == "lsanet_x4_fp16.rtx.engine")
    assert sidecar["onnx_sha256"] == fp16_onnx["sha256"]
    assert sidecar["engine_sha256"] == engine["sha256"] == sha256_file(out / engine["file"])
    assert sidecar["precision"] == "fp16" and sidecar["opset"] == onnx.load(out / fp16_onnx["file"]).opset_import[0].version
    assert sidecar["io"] == [
        {"name": "lr", "mode": "input", "dtype": "FLOAT", "shape": [-1, 3, -1, -1]},
        {"name": "sr", "mode": "output", "dtype": "FLOAT", "shape": [-1, 3, -1, -1]},
        {"name": "sr_pixels", "mode": "output", "dtype": "UINT8", "shape": [-1, -1, -1, 3]},
        {"name": "sr_sum", "mode": "output", "dtype": "FLOAT", "shape": [-1]},
    ]
    default = Profile()
    assert sidecar["profile"]["lr"] == {k: [s[0], 3, s[1], s[2]] for k, s in zip(("min", "opt", "max"), (default.min, default.opt, default.max))}
    assert sidecar["target_compute_capabilities"] == ["SM86", "SM89", "SM120"]
    assert sidecar["profiles"] == 2  # one per tile the runtime runs at once
    # A real serialized plan: FP16 weights alone are ~280 KB.
    assert sidecar["engine_bytes"] > 1_000_000


def test_rerun_reuses_the_engine(exported, weights_path: Path) -> None:
    out = exported[0]
    before = snapshot(out)
    result = run_cli("--ckpt", str(weights_path), "--fp16", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "lsanet_x4_fp16.rtx.engine: reused" in result.stdout
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == {k: v for k, v in before.items() if k != "manifest.json"}


def test_changed_profile_rebuilds(tmp_path: Path, exported) -> None:
    out = exported[0]
    onnx_path = out / "lsanet_x4_fp16.onnx"
    engine = tmp_path / "e.rtx.engine"
    result = build_engine(
        "rtx", onnx_path, engine, precision="fp16", opset=18, profile=Profile(max=(8, 640, 640)),
        reuse_from=out / "lsanet_x4_fp16.rtx.engine",
    )  # fmt: skip
    assert not result.reused and engine.is_file()
    assert result.sidecar["profile"]["lr"]["max"] == [8, 3, 640, 640]


def test_broken_onnx_fails_loudly(tmp_path: Path, exported) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((exported[0] / "lsanet_x4_fp16.onnx").read_bytes()[:20_000])
    with pytest.raises(EngineBuildError, match="cannot parse broken.onnx"):
        build_engine("rtx", broken, tmp_path / "x.rtx.engine", precision="fp16", opset=18)
    assert list(tmp_path.iterdir()) == [broken]


def copy_of(exported) -> Path:
    target = exported[0].parent / f"copy-{len(list(exported[0].parent.iterdir()))}"
    shutil.copytree(exported[0], target)
    return target


def test_failed_gate_changes_nothing(exported, weights_path: Path, monkeypatch) -> None:
    out = copy_of(exported)
    before = snapshot(out)

    def broken_fp16(fp32):
        model = to_fp16(fp32)
        for node in model.graph.node:
            if node.op_type == "Sigmoid":
                node.op_type = "Relu"
        return model

    monkeypatch.setattr(pipeline, "to_fp16", broken_fp16)
    with pytest.raises(ParityError):
        run_export(ExportConfig(ckpt=weights_path, out_dir=out, fp16=True))
    assert snapshot(out) == before


def test_failed_engine_build_leaves_no_partial_files(exported, weights_path: Path, monkeypatch) -> None:
    out = copy_of(exported)
    (out / "lsanet_x4_fp16.rtx.engine").unlink()

    def failing_build(flavor, onnx_path, engine_path, **kwargs):
        engine_path.write_bytes(b"half an engine")
        raise EngineBuildError(f"{flavor}: build failed: simulated")

    monkeypatch.setattr(pipeline, "build_engine", failing_build)
    with pytest.raises(EngineBuildError):
        run_export(ExportConfig(ckpt=weights_path, out_dir=out, fp16=True))
    assert not list(out.glob(".staging-*"))
    assert not (out / "lsanet_x4_fp16.rtx.engine").exists()
    with pytest.raises(DeployError, match="lsanet_x4_fp16.rtx.engine, which is missing"):
        load_manifest(out)


def test_unavailable_flavor_is_a_one_line_error(weights_path: Path, tmp_path: Path) -> None:
    result = run_cli("--ckpt", str(weights_path), "--flavor", "tensorrt", "--out", str(tmp_path))
    if result.returncode == 0:
        pytest.skip("standard TensorRT and a GPU are present here")
    assert result.stderr.startswith("error: --flavor tensorrt: ") and result.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_bad_profile_is_rejected(weights_path: Path, tmp_path: Path) -> None:
    result = run_cli("--ckpt", str(weights_path), "--min-shape", "1x8x8", "--out", str(tmp_path))
    assert result.returncode == 1 and "sides >= 15" in result.stderr and "Traceback" not in result.stderr
