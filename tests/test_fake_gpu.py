"""GPU detection and backend selection against the real TensorRT-RTX and cuda-python on a fake GPU.

../shared/tools/fakecuda builds a `libcuda.so.1` that reports a chosen GPU (compute capability, driver) to
everything that asks the driver, ctypes (core/nvidia.py), cuda-python and TensorRT-RTX alike; nothing runs
on it (context creation fails with CUDA_ERROR_NOT_SUPPORTED, 801; an old driver gives cudaError 35). Built
here in a temporary folder (it needs only a C compiler), then the commands run in subprocesses with it
first on LD_LIBRARY_PATH, as a user's machine with that GPU would run them:
  - `upscale.py --backend auto` passes over every GPU backend with one line each, the TensorRT-RTX one
    carrying TensorRT's own reason (SM90: TensorRT-RTX has no such target; SM86/89/120: the CUDA error
    TensorRT-RTX met; an old driver: driver advice), and writes the result on a CPU backend;
  - `--backend tensorrt-rtx` fails with one `error:` line and no traceback;
  - `python -m bench.gpu_check` exits non-zero saying a GPU is present but no GPU backend ran, its other
    sections run (the FP32 rerun on the CPU), and the suite's TensorRT tests skip, never fail, on SM90.
Without ../shared the tests skip with the reason on a user's machine and fail under CI (CI is set), as
tests/conftest.py does; so does a missing C compiler.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.backends.registry import REGISTRY
from tests.conftest import ROOT, shared_path

GPU_LABELS = [entry.label for entry in REGISTRY if entry.gpu]
DRIVER_801 = ("TensorRT-RTX cannot run it here (", "cudaError 801", "check the GPU and driver")
CASES = {  # the fake driver's settings, and what the tensorrt-rtx line must say
    "SM86": ({"FAKECUDA_CC": "8.6", "FAKECUDA_NAME": "NVIDIA GeForce RTX 3090"}, DRIVER_801),
    "SM89": ({"FAKECUDA_CC": "8.9", "FAKECUDA_NAME": "NVIDIA GeForce RTX 4090"}, DRIVER_801),
    "SM90": ({"FAKECUDA_CC": "9.0"}, ("TensorRT-RTX cannot run on this GPU (SM90", "--flavor tensorrt")),
    "SM120": ({"FAKECUDA_CC": "12.0", "FAKECUDA_NAME": "NVIDIA GeForce RTX 5090"}, DRIVER_801),
    "old-driver": ({"FAKECUDA_CC": "8.9", "FAKECUDA_DRIVER": "11080", "FAKECUDA_NAME": "NVIDIA GeForce RTX 4090"},
                   ("cudaError 35: CUDA driver version is insufficient", "update the NVIDIA driver")),
}  # fmt: skip


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory) -> Path:
    """The folder holding the fake libcuda.so.1, built from ../shared's source."""
    build = shared_path("tools/fakecuda/build.sh")
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the fake libcuda is for Linux x86_64/aarch64 only")
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        _unavailable(f"no C compiler ({compiler}) to build the fake libcuda")
    out = tmp_path_factory.mktemp("fakecuda")
    built = subprocess.run(["bash", str(build), str(out)], check=False, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return out


def run_on_fake_gpu(fake: Path, cache: Path, settings: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings, "LSANET_CACHE": str(cache)}
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(fake), os.environ.get("LD_LIBRARY_PATH")]))
    return subprocess.run([sys.executable, *command], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def small_png(tmp_path_factory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("input") / "small.png"
    y, x = np.mgrid[0:40, 0:48]
    assert cv2.imwrite(str(path), np.dstack([x * 5, y * 6, (x + y) * 3]).astype(np.uint8))
    return path


def tensorrt_rtx_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.strip().startswith("skipped tensorrt-rtx:")]


@pytest.mark.parametrize("case", CASES)
def test_auto_passes_over_each_gpu_backend_with_tensorrts_own_reason(fake_libcuda, exported, small_png, tmp_path, case) -> None:
    settings, needles = CASES[case]
    out = tmp_path / "out.png"
    result = run_on_fake_gpu(fake_libcuda, tmp_path / "cache", settings, "upscale.py", str(small_png), str(out),
                             "--engines-dir", str(exported[0]))  # fmt: skip
    assert result.returncode == 0, result.stderr
    import cv2

    assert cv2.imread(str(out)).shape == (160, 192, 3)
    backend = next(line for line in result.stderr.splitlines() if line.startswith("backend:"))
    assert "CUDA" not in backend and "tensorrt" not in backend, backend  # written by a CPU backend
    for label in GPU_LABELS:  # one line per GPU backend, each with its reason
        lines = [line for line in result.stderr.splitlines() if line.strip().startswith(f"skipped {label}:")]
        assert len(lines) == 1, (label, result.stderr)
    (rtx,) = tensorrt_rtx_lines(result.stderr)
    assert all(needle in rtx for needle in needles), rtx
    assert "no reason given" not in rtx
    if case != "SM90":  # a CUDA or driver error: rebuilding the engine would not help, so it is not advised
        assert "rebuild" not in rtx, rtx


@pytest.mark.parametrize("case", CASES)
def test_an_explicit_gpu_backend_fails_with_one_line(fake_libcuda, exported, small_png, tmp_path, case) -> None:
    settings, needles = CASES[case]
    out = tmp_path / "out.png"
    result = run_on_fake_gpu(fake_libcuda, tmp_path / "cache", settings, "upscale.py", str(small_png), str(out),
                             "--engines-dir", str(exported[0]), "--backend", "tensorrt-rtx")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(needle in errors[0] for needle in needles), result.stderr
    assert not out.exists()


def test_gpu_check_fails_when_a_gpu_is_present_but_no_gpu_backend_ran(fake_libcuda, exported, tmp_path) -> None:
    """SM90 (an H100) with an export holding only a TensorRT-RTX engine, no onnxruntime-gpu, a CPU torch: every
    GPU section skips with its reason and Set5 passes on the CPU, yet the machine's GPU did nothing, so the
    verdict fails; and the suite's TensorRT tests, run by gpu_check, skip there rather than fail."""
    report_path = tmp_path / "gpu_check.json"
    result = run_on_fake_gpu(fake_libcuda, tmp_path / "cache", CASES["SM90"][0], "-m", "bench.gpu_check",
                             "--engines-dir", str(exported[0]), "--out", str(report_path))  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert "FAIL gpu used: a GPU is present (NVIDIA H100 80GB HBM3, SM90, driver 12.8) but no GPU backend ran on it" in result.stdout
    checks = {c["name"]: c for c in json.loads(report_path.read_text())["checks"]}
    assert checks["tensorrt_rtx engine"]["status"] == "SKIP" and "SM90" in checks["tensorrt_rtx engine"]["detail"]
    assert checks["fp32 rerun"]["status"] == "PASS", checks["fp32 rerun"]  # the Upscaler's fallback, here on the CPU
    assert checks["suite GPU tests"]["status"] == "PASS", checks["suite GPU tests"]["detail"]
    assert [name for name, c in checks.items() if c["status"] == "FAIL"] == ["gpu used"], result.stdout
    assert json.loads(report_path.read_text())["gpu_ran"] == {}


# What gpu_check does on a GPU backend, run here on ONNX Runtime CPU with a scripted device memory: every
# section's code runs before a GPU machine sees it (small shapes keep it to seconds).
class ScriptedMemory:
    """DeviceMemory's interface: free MiB that drops by `leak` at every query after the first load."""

    source, missing = "scripted", None

    def __init__(self, leak: int) -> None:
        self.leak, self.calls = leak, 0

    def free(self) -> int:
        self.calls += 1
        return 10_000 - self.leak * max(0, self.calls - 2)

    def try_free(self) -> tuple[int | None, str | None]:
        return self.free(), None


@pytest.fixture
def small_gpu_check(monkeypatch):
    from bench import gpu_check

    monkeypatch.setattr(gpu_check, "SHAPES", {"min 16x16": (16, 16), "odd 17x33": (17, 33)})
    monkeypatch.setattr(gpu_check, "REPEATS", 1)
    monkeypatch.setattr(gpu_check, "MULTI_TILE", {"shape": (100, 120), "tile": 48})
    monkeypatch.setattr(gpu_check, "THROUGHPUT_SIDE", 128)
    return gpu_check


@pytest.mark.parametrize("leak", [0, 16], ids=["no-leak", "leak"])
def test_gpu_check_sections_run_on_a_cpu_backend(small_gpu_check, exported, weights_path, tmp_path, monkeypatch, leak) -> None:
    gc = small_gpu_check
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path / "cache"))
    report = gc.Report()
    refs = gc.References(exported[0], weights_path, report)
    spec = gc.Spec("onnxruntime-cpu fp16", "onnxruntime", str(exported[0] / "lsanet_x4_fp16.onnx"), "fp16", "cpu")
    gc.exercise(spec, refs, ScriptedMemory(leak), report)
    status = {c["name"]: c["status"] for c in report.checks}
    label = spec.label
    assert status == {f"{label} load": "PASS", f"{label} min 16x16": "PASS", f"{label} odd 17x33": "PASS",
                      f"{label} multi-tile": "PASS", f"{label} throughput": "PASS",
                      f"{label} load/unload x{gc.LOAD_CYCLES}": "FAIL" if leak else "PASS",
                      f"{label} warm load (fresh process)": "PASS"}, report.checks  # fmt: skip
    details = {c["name"]: c for c in report.checks}
    assert details[f"{label} multi-tile"]["tiles"] > 1
    assert set(details[f"{label} min 16x16"]["parity"]) == {"onnxruntime-cpu-fp32", "pytorch"}
    assert details[f"{label} load/unload x{gc.LOAD_CYCLES}"]["leaked_mib"] == leak * gc.LOAD_CYCLES
    assert details[f"{label} warm load (fresh process)"]["runtime_cache"] == "n/a"
    assert report.gpu_ran == {label: "onnxruntime CPU (fp16)"}


def test_gpu_check_reports_a_failed_load_with_the_cuda_error_before_it(exported, tmp_path) -> None:
    from bench import gpu_check as gc
    from core.nvidia import cuda_device

    if cuda_device() is not None:
        pytest.skip("a GPU is present: the CUDA calls succeed")
    memory = gc.DeviceMemory()
    with pytest.raises(gc.CudaCallError, match=r"cudaMemGetInfo failed \(cudaError\w+\)"):
        memory.free()
    report = gc.Report()
    spec = gc.Spec("torch-cuda fp16", "torch", str(tmp_path / "none.pth"), "fp16", "cuda")
    gc.exercise(spec, gc.References(exported[0], None, report), memory, report)
    (check,) = report.checks
    assert check["status"] == "FAIL" and check["name"] == "torch-cuda fp16 load", check
    assert "(before it, cudaMemGetInfo failed (cudaError" in check["detail"] and not report.gpu_ran


def test_gpu_check_says_when_pytest_is_missing(monkeypatch, tmp_path) -> None:
    from bench import gpu_check as gc
    from core.nvidia import CudaDevice

    real = gc.importlib.util.find_spec
    monkeypatch.setattr(gc.importlib.util, "find_spec", lambda name, *a: None if name == "pytest" else real(name, *a))
    report = gc.Report()
    gc.check_suite(CudaDevice("NVIDIA H100 80GB HBM3", "9.0", "12.8", 81559), tmp_path, report)
    (check,) = report.checks
    assert check["status"] == "SKIP" and check["detail"].startswith("pytest is not installed"), check


def test_gpu_check_times_batches_in_flight_where_the_backend_runs_several(small_gpu_check, exported, weights_path, tmp_path, monkeypatch) -> None:
    """A backend that runs two calls at once (a TensorRT engine's lanes; here ONNX Runtime CPU, whose
    session may be run from two threads) gets the throughput in flight and beside it one batch at a time."""
    import dataclasses

    from runtime.backends.onnxruntime import ORTBackend

    class TwoAtOnce(ORTBackend):
        @property
        def limits(self):
            return dataclasses.replace(super().limits, concurrent=2)

    gc = small_gpu_check
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path / "cache"))
    report = gc.Report()
    refs = gc.References(exported[0], weights_path, report)
    with TwoAtOnce(exported[0] / "lsanet_x4_fp32.onnx", "fp32", "cpu") as backend:
        gc.check_tiles("two", backend, refs, report)
    details = {c["name"]: c for c in report.checks}
    assert {name: c["status"] for name, c in details.items()} == {"two multi-tile": "PASS", "two throughput": "PASS", "two in flight": "PASS"}
    assert details["two throughput"]["in_flight"] == 2 and details["two in flight"]["speedup"] > 0
