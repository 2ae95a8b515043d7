"""One command that verifies a GPU machine: python -m bench.gpu_check [--engines-dir DIR] [--ckpt PTH] [--out JSON].

Prints one line per check (PASS / FAIL / SKIP with the reason) and writes them, with the environment, to
gpu_check.json; the last line is `N passed, M failed, K skipped`. Checks: the environment (GPU, compute
capability, driver, every GPU package's version, the providers ONNX Runtime really uses); per engine flavour
the build time, I/O, validity, device memory, context creation cold and warm and the runtime cache; a shape
matrix (min, max, odd sizes) on a real photo with NaN/Inf, max abs and PSNR against ONNX Runtime CPU FP32
and PyTorch under the export's FP16 thresholds, and median latency; ONNX Runtime CUDA FP32/FP16 the same
way; upscale.py --backend auto on Set5 against the reference Y-PSNRs; the suite's GPU tests. Without a GPU
it finishes in seconds with SKIPs. It never needs the internet: the export is made from the local
checkpoint (../shared/weights) into a temporary folder unless --engines-dir names one. torch is optional.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from core.artifacts import MANIFEST, MODULES, load_manifest
from core.metrics import compare, y_psnr
from core.nvidia import CudaDevice, cuda_device
from core.thresholds import THRESHOLDS
from runtime.backends.base import Backend, BackendError

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
PACKAGES = (
    "tensorrt-rtx-cu12", "tensorrt-rtx-cu13", "tensorrt-cu12", "tensorrt-cu13", "tensorrt", "cuda-bindings",
    "cuda-python", "onnxruntime", "onnxruntime-gpu", "torch", "cupy-cuda12x", "nvidia-cudnn-cu12", "numpy",
)  # fmt: skip
# LR (height, width): the profile's min and max, odd sizes, and a thin tile like the tiler's edge tiles.
SHAPES = {"min 16x16": (16, 16), "odd 17x33": (17, 33), "odd 255x37": (255, 37), "thin 96x512": (96, 512), "max 512x512": (512, 512)}
REPEATS = 10
# Y-PSNR may differ from the reference table by this much: FP16 at >= 55 dB against FP32 (the export gate)
# adds < 1% to the MSE of a ~33 dB result (< 0.04 dB), and the table is rounded to 0.01 dB.
SET5_TOLERANCE_DB = 0.05


class Report:
    """The checks made so far; each is printed as it is added."""

    def __init__(self) -> None:
        self.environment: dict = {}
        self.checks: list[dict] = []

    def add(self, status: str, name: str, detail: str, **data: object) -> None:
        self.checks.append({"status": status, "name": name, "detail": detail, **data})
        print(f"{status:<4} {name}: {detail}", flush=True)

    def judge(self, name: str, ok: bool, detail: str, **data: object) -> None:
        self.add("PASS" if ok else "FAIL", name, detail, **data)

    def count(self, status: str) -> int:
        return sum(c["status"] == status for c in self.checks)

    def summary(self) -> str:
        return f"{self.count('PASS')} passed, {self.count('FAIL')} failed, {self.count('SKIP')} skipped"


def environment(device: CudaDevice | None) -> dict:
    """GPU, driver, versions of the GPU packages, ONNX Runtime's providers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import onnxruntime as ort

    return {"platform": platform.platform(), "python": platform.python_version(), "gpu": device.as_dict() if device else None,
            "packages": versions, "onnxruntime_available_providers": ort.get_available_providers()}  # fmt: skip


def photo_tile(height: int, width: int) -> np.ndarray:
    """A 1 x 3 x H x W crop of a real photo (scikit-image's astronaut, 512x512), float32 in [0, 1]."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:height, :width].transpose(2, 0, 1)[None] / np.float32(255))


def median_ms(backend: Backend, x: np.ndarray) -> float:
    for _ in range(2):
        backend.infer(x)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        backend.infer(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


class References:
    """ONNX Runtime CPU FP32 and (where torch is installed) PyTorch outputs for the shape matrix, clamped."""

    def __init__(self, folder: Path, ckpt: Path | None, report: Report) -> None:
        from runtime.backends.onnxruntime import ORTBackend

        self.outputs: dict[str, dict[str, np.ndarray]] = {}
        with ORTBackend(folder / "lsanet_x4_fp32.onnx", "fp32", "cpu") as ort:
            self.outputs["onnxruntime-cpu-fp32"] = {k: np.clip(ort.infer(photo_tile(*s)), 0, 1) for k, s in SHAPES.items()}
        try:
            import torch

            from export.checkpoint import load_checkpoint
        except ImportError:
            report.add("SKIP", "pytorch reference", "torch is not installed: engines compared with ONNX Runtime CPU only")
            return
        if ckpt is None or not ckpt.is_file():
            report.add("SKIP", "pytorch reference", f"no checkpoint at {ckpt}")
            return
        model = load_checkpoint(ckpt)
        with torch.no_grad():
            self.outputs["pytorch"] = {
                k: np.clip(model(torch.from_numpy(photo_tile(*s))).numpy(), 0, 1) for k, s in SHAPES.items()
            }

    def shape_matrix(self, label: str, backend: Backend, report: Report) -> None:
        """Every shape through `backend`, held to the export gate's FP16 bounds (GPU FP32 may use TF32, whose
        10-bit mantissa is FP16's, so FP32 on the GPU is held to the same bounds, not the CPU's 1e-4)."""
        for key, shape in SHAPES.items():
            out = backend.infer(photo_tile(*shape))
            results = {ref: compare(outputs[key], np.clip(out, 0, 1)) for ref, outputs in self.outputs.items()}
            ok = all(r.nonfinite == 0 and r.psnr >= THRESHOLDS.fp16_min_psnr and r.max_abs <= THRESHOLDS.fp16_max_abs
                     for r in results.values())  # fmt: skip
            latency = median_ms(backend, photo_tile(*shape))
            detail = "; ".join(f"vs {ref}: PSNR {r.psnr:.1f} dB, max abs {r.max_abs * 255:.2f}/255, NaN/Inf {r.nonfinite}"
                               for ref, r in results.items())  # fmt: skip
            report.judge(f"{label} {key}", ok, f"{detail}; median {latency:.2f} ms",
                         latency_ms=latency, parity={ref: r.as_dict() for ref, r in results.items()})  # fmt: skip


def export_folder(args: argparse.Namespace, device: CudaDevice | None, scratch: Path, report: Report) -> Path | None:
    """The export to check: --engines-dir, else a fresh export.py --fp16 run (GPU machines only)."""
    if args.engines_dir is not None:
        load_manifest(args.engines_dir)
        return args.engines_dir
    if device is None:
        report.add("SKIP", "export", "no NVIDIA GPU here (pass --engines-dir to check an existing export's ONNX on the CPU)")
        return None
    if not args.ckpt.is_file():
        report.add("SKIP", "export", f"no checkpoint at {args.ckpt} (pass --ckpt)")
        return None
    folder = scratch / "engines"
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(ROOT / "export.py"), "--ckpt", str(args.ckpt), "--fp16", "--out", str(folder)],
                         cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    report.judge("export", run.returncode == 0, f"export.py --fp16 in {time.perf_counter() - start:.1f} s"
                 + ("" if run.returncode == 0 else f": {run.stderr.strip().splitlines()[-1:]}"))  # fmt: skip
    return folder if run.returncode == 0 else None


def check_engine(flavor: str, folder: Path, device: CudaDevice | None, refs: References, report: Report) -> None:
    """Build time, I/O, validity, device memory, context cold and warm, runtime cache, then the shape matrix."""
    from runtime.backends.tensorrt import (
        TensorRTBackend,
        check_compatibility,
        gpu_modules,
    )

    manifest = load_manifest(folder)
    engine = next((folder / a["file"] for a in manifest["artifacts"] if a.get("flavor") == flavor), None)
    label = f"{MODULES[flavor]} engine"
    if engine is None:
        notes = [n for n in manifest.get("notes", []) if MODULES[flavor] in n]
        report.add("SKIP", label, "; ".join(notes) or "not in the export")
        return
    backend = TensorRTBackend(engine)
    built = {k: v for k, v in manifest.get("timings_s", {}).items() if k.startswith(MODULES[flavor])}
    info = {"build_s": built, "io": backend.sidecar["io"], "targets": backend.sidecar["target_compute_capabilities"]}
    if device is None:
        report.add("SKIP", label, "needs an NVIDIA GPU to run", **info)
        return
    try:
        trt, cudart = gpu_modules(flavor)
        check_compatibility(engine, backend.sidecar, trt.__version__, device.compute_capability)
    except BackendError as exc:
        report.add("SKIP", label, str(exc), **info)
        return
    free_before = cudart.cudaMemGetInfo()[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            backend.activate()
        except BackendError as exc:
            report.judge(label, False, str(exc), **info)
            return
        cold = time.perf_counter() - start
    used_mib = (free_before - cudart.cudaMemGetInfo()[1]) >> 20
    backend.deactivate()
    cache = backend.runtime_cache_path
    cache_state = f"{cache.stat().st_size} bytes" if cache.is_file() else "none"
    start = time.perf_counter()
    backend.activate()
    warm = time.perf_counter() - start
    validity = "; ".join(str(w.message) for w in caught) or "VALID"
    report.add("PASS", label, f"built in {built}, I/O {[(t['name'], t['dtype']) for t in info['io']]}, validity {validity}, "
               f"device memory {used_mib} MiB, context cold {cold:.1f} s / warm {warm:.1f} s, runtime cache {cache_state}",
               validity=validity, device_memory_mib=used_mib, context_cold_s=cold, context_warm_s=warm,
               runtime_cache=cache_state, **info)  # fmt: skip
    try:
        refs.shape_matrix(backend.name, backend, report)
    finally:
        backend.deactivate()


def check_ort_cuda(folder: Path, refs: References, report: Report) -> None:
    from runtime.backends.onnxruntime import ORTBackend

    for precision in ("fp32", "fp16"):
        backend = ORTBackend(folder / f"lsanet_x4_{precision}.onnx", precision, "cuda")
        try:
            backend.activate()
        except BackendError as exc:
            report.add("SKIP", f"onnxruntime-cuda {precision}", str(exc))
            continue
        try:
            report.add("PASS", f"onnxruntime-cuda {precision}", f"providers really used: {backend.providers}")
            refs.shape_matrix(f"onnxruntime-cuda {precision}", backend, report)
        finally:
            backend.deactivate()


def set5_reference() -> dict[str, float]:
    """SET5_REFERENCE_Y from tests/test_model.py, read without importing it (that needs torch and pytest)."""
    tree = ast.parse((ROOT / "tests" / "test_model.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SET5_REFERENCE_Y")
    return ast.literal_eval(node.value)


def check_set5(folder: Path, scratch: Path, report: Report) -> None:
    """upscale.py --backend auto on Set5 as a user runs it: chosen backend, Y-PSNR against the reference, time."""
    import cv2

    source = SHARED / "data" / "Set5"
    if not source.is_dir():
        report.add("SKIP", "set5 upscale.py --backend auto", f"{source} not found")
        return
    out = scratch / "set5"
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(ROOT / "upscale.py"), str(source / "*_LR.png"), str(out), "--backend", "auto",
                          "--engines-dir", str(folder)], cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - start
    chosen = next((line for line in run.stderr.splitlines() if line.startswith("backend:")), "backend: ?")
    if run.returncode != 0:
        report.judge("set5 upscale.py --backend auto", False, f"exit {run.returncode}: {run.stderr.strip().splitlines()[-1:]}")
        return
    measured = {}
    for name in set5_reference():
        sr = cv2.imread(str(out / name.replace(".png", "_x4.png")))[..., ::-1]
        hr = cv2.imread(str(source / name.replace("_LR", "_HR")))[..., ::-1]
        measured[name] = y_psnr(sr, hr)
    worst = max(abs(measured[n] - set5_reference()[n]) for n in measured)
    report.judge("set5 upscale.py --backend auto", worst <= SET5_TOLERANCE_DB,
                 f"{chosen}; Y-PSNR {', '.join(f'{v:.2f}' for v in measured.values())} dB (worst off the reference by "
                 f"{worst:.3f} dB, allowed {SET5_TOLERANCE_DB}); wall {wall:.1f} s", y_psnr=measured, wall_s=wall)  # fmt: skip


def check_suite(device: CudaDevice | None, report: Report) -> None:
    """The suite's GPU tests (tests/test_trt_runtime.py), in a subprocess as CI would run them."""
    if device is None:
        report.add("SKIP", "suite GPU tests", "no NVIDIA GPU here: they skip with 'needs an NVIDIA GPU'")
        return
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_trt_runtime.py"], cwd=ROOT,
                         capture_output=True, text=True, check=False)  # fmt: skip
    last = (run.stdout.strip().splitlines() or ["no output"])[-1]
    report.judge("suite GPU tests", run.returncode == 0, f"pytest tests/test_trt_runtime.py: {last}")


def guarded(report: Report, name: str, check: Callable[..., None], *args: object) -> None:
    """Run one section; an unexpected exception is that section's FAIL, and the other sections still run."""
    try:
        check(*args)
    except Exception as exc:  # noqa: BLE001 - a check must report, not end the run
        report.add("FAIL", name, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, help="an export.py output folder (default: export into a temporary one)")
    parser.add_argument("--ckpt", type=Path, default=SHARED / "weights" / "team44_LSANet.pth", help="checkpoint to export")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="where the JSON report goes")
    args = parser.parse_args(argv)
    report = Report()
    device = cuda_device()
    report.environment = environment(device)
    for key, value in report.environment.items():
        print(f"ENV  {key}: {value}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        os.environ["LSANET_CACHE"] = str(Path(scratch) / "cache")  # a cold runtime cache, and no stale one
        folder = export_folder(args, device, Path(scratch), report)
        if folder is not None and (folder / MANIFEST).is_file():
            refs = References(folder, args.ckpt, report)
            for flavor in MODULES:
                guarded(report, f"{MODULES[flavor]} engine", check_engine, flavor, folder, device, refs, report)
            guarded(report, "onnxruntime-cuda", check_ort_cuda, folder, refs, report)
            guarded(report, "set5 upscale.py --backend auto", check_set5, folder, Path(scratch), report)
        else:
            report.add("SKIP", "engines, ONNX Runtime CUDA and Set5", "no export to check")
        check_suite(device, report)
    args.out.write_text(json.dumps({"environment": report.environment, "checks": report.checks,
                                    "summary": report.summary()}, indent=2, default=float) + "\n")  # fmt: skip
    print(report.summary())
    return 0 if report.count("FAIL") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
