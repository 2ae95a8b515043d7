"""One command that verifies a GPU machine: python -m bench.gpu_check [--engines-dir DIR] [--ckpt PTH] [--out JSON].

Prints one line per check (PASS / FAIL / SKIP with the reason) and writes them, with the environment, to
gpu_check.json; the last line is `N passed, M failed, K skipped`, and the exit status is 1 when anything failed.

Checks: the environment (GPU, compute capability, driver, every GPU package's version, the providers ONNX
Runtime really uses, whether torch sees CUDA). Then every GPU backend that can be made here (each TensorRT
engine flavour of the export, ONNX Runtime CUDA FP32/FP16, PyTorch on CUDA FP32/FP16), each the same way:
  - load: cold load time (TensorRT-RTX: with no runtime cache, so the JIT compiles), device memory while
    loaded (cudaMemGetInfo, every CUDA call's error checked), the validity TensorRT-RTX reports;
  - a shape matrix (min, max, odd, thin) on a real photo: NaN/Inf, max abs and PSNR against ONNX Runtime CPU
    FP32 and PyTorch under the export's FP16 thresholds, and median latency;
  - a multi-tile image (the tiler of runtime/tiling.py, several tiles with overlap and edge tiles) against
    the same tiling on ONNX Runtime CPU FP32, and per-tile throughput at the default tile on a large image;
  - a load/unload loop: free device memory must come back to what it was after the first unload;
  - the warm load in a fresh process (a second run, after the runtime cache exists), with whether
    TensorRT-RTX accepted the runtime cache (its deserialize returned True).
Then the Upscaler's FP32 rerun of NaN/Inf tiles (runtime/upscaler.py) on the first FP16 GPU backend that ran
(on the CPU where none did), upscale.py --backend auto on Set5 against the reference Y-PSNRs, the suite's GPU
tests, and last the verdict: where an NVIDIA GPU is present but no GPU backend ran on it, that is a FAIL
(a CPU backend passing Set5 proves nothing about the GPU).

Without a GPU it finishes in seconds with SKIPs. It never needs the internet: the export is made from the
local checkpoint (../shared/weights) into a temporary folder unless --engines-dir names one. torch is optional.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
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
# The multi-tile image: a 512x512 photo in tiles of 256 (9 tiles with the default overlap, edge tiles included),
# against the same tiling on ONNX Runtime CPU FP32 (tiled vs whole differs by itself: BENCHMARKS.md "Tiling").
MULTI_TILE = {"shape": (512, 512), "tile": 256}
# Per-tile throughput: a 1024x1024 LR image (a mosaic of the photo) at the default tile size.
THROUGHPUT_SIDE = 1024
# The FP32 rerun: a small photo in small tiles, its first tile's output poisoned with NaN.
RERUN = {"shape": (96, 160), "tile": 64}
# The load/unload loop: this many cycles after the first; free device memory may end this far (MiB) below
# where it was after the first unload (allocation granularity is 2 MiB; a leaking buffer is >= tens of MiB).
LOAD_CYCLES = 5
LEAK_TOLERANCE_MIB = 8
# Y-PSNR may differ from the reference table by this much: FP16 at >= 55 dB against FP32 (the export gate)
# adds < 1% to the MSE of a ~33 dB result (< 0.04 dB), and the table is rounded to 0.01 dB.
SET5_TOLERANCE_DB = 0.05


class Report:
    """The checks made so far; each is printed as it is added. `gpu_ran`: label -> backend, for every GPU
    backend that loaded and ran on the GPU."""

    def __init__(self) -> None:
        self.environment: dict = {}
        self.checks: list[dict] = []
        self.gpu_ran: dict[str, str] = {}

    def add(self, status: str, name: str, detail: str, **data: object) -> None:
        self.checks.append({"status": status, "name": name, "detail": detail, **data})
        print(f"{status:<4} {name}: {detail}", flush=True)

    def judge(self, name: str, ok: bool, detail: str, **data: object) -> None:
        self.add("PASS" if ok else "FAIL", name, detail, **data)

    def count(self, status: str) -> int:
        return sum(c["status"] == status for c in self.checks)

    def summary(self) -> str:
        return f"{self.count('PASS')} passed, {self.count('FAIL')} failed, {self.count('SKIP')} skipped"


class CudaCallError(Exception):
    """A CUDA call returned an error (its name is in the message)."""


class DeviceMemory:
    """Free device memory in MiB: cudaMemGetInfo through cuda-python (what the TensorRT backend uses), else
    torch.cuda.mem_get_info; every call's error is checked (CudaCallError naming the call and the error)."""

    def __init__(self) -> None:
        self.source, self.missing = None, None
        try:
            from cuda.bindings import runtime as cudart

            self._cudart, self.source = cudart, "cudaMemGetInfo"
            return
        except ImportError:
            pass
        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                self._torch, self.source = torch, "torch.cuda.mem_get_info"
                return
        self.missing = "device memory not measured: neither cuda-python nor torch with CUDA is installed"

    def free(self) -> int:
        if self.source == "cudaMemGetInfo":
            cudart = self._cudart
            error, free, _total = cudart.cudaMemGetInfo()
            if error != cudart.cudaError_t.cudaSuccess:
                raise CudaCallError(f"cudaMemGetInfo failed ({getattr(error, 'name', error)})")
            return int(free) >> 20
        if self.source == "torch.cuda.mem_get_info":
            try:
                return int(self._torch.cuda.mem_get_info()[0]) >> 20
            except RuntimeError as exc:
                raise CudaCallError(f"torch.cuda.mem_get_info failed ({str(exc).splitlines()[0]})") from None
        raise CudaCallError(self.missing)

    def try_free(self) -> tuple[int | None, str | None]:
        """(free MiB, None) or (None, why not)."""
        try:
            return self.free(), None
        except CudaCallError as exc:
            return None, str(exc)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One backend to check, made the same way in this process and in a fresh one (the warm load)."""

    label: str
    kind: str  # "tensorrt" | "onnxruntime" | "torch"
    path: str  # the engine, the ONNX graph or the checkpoint
    precision: str = "fp32"
    device: str = "cuda"

    def make(self) -> Backend:
        if self.kind == "tensorrt":
            from runtime.backends.tensorrt import TensorRTBackend

            return TensorRTBackend(Path(self.path))
        if self.kind == "onnxruntime":
            from runtime.backends.onnxruntime import ORTBackend

            return ORTBackend(Path(self.path), self.precision, self.device)
        from runtime.backends.pytorch import TorchBackend

        return TorchBackend(Path(self.path), device=self.device, precision=self.precision)


def environment(device: CudaDevice | None) -> dict:
    """GPU, driver, versions of the GPU packages, ONNX Runtime's providers, torch's CUDA."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import onnxruntime as ort

    torch_cuda = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_cuda = {"available": torch.cuda.is_available(), "built_for": torch.version.cuda}
    return {"platform": platform.platform(), "python": platform.python_version(), "gpu": device.as_dict() if device else None,
            "packages": versions, "onnxruntime_available_providers": ort.get_available_providers(),
            "torch_cuda": torch_cuda}  # fmt: skip


def photo_rgb(height: int, width: int) -> np.ndarray:
    """An H x W x 3 uint8 crop of a real photo (scikit-image's astronaut, 512x512), mirrored to fill larger sizes."""
    from skimage import data

    photo = data.astronaut()
    top = np.concatenate([photo, photo[:, ::-1]], axis=1)
    tile = np.concatenate([top, top[::-1]], axis=0)  # 1024x1024, mirrored: no hard edges
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def photo_tile(height: int, width: int) -> np.ndarray:
    """A 1 x 3 x H x W float32 crop of the photo in [0, 1]."""
    return np.ascontiguousarray(photo_rgb(height, width).transpose(2, 0, 1)[None] / np.float32(255))


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
    """ONNX Runtime CPU FP32 and (where torch is installed) PyTorch outputs for the shape matrix, clamped, and
    ONNX Runtime CPU FP32 through the tiler; computed on first use (only when a GPU backend ran)."""

    def __init__(self, folder: Path, ckpt: Path | None, report: Report) -> None:
        self.folder, self.ckpt, self.report = folder, ckpt, report
        self._outputs: dict[str, dict[str, np.ndarray]] | None = None
        self._tiled: dict[tuple, np.ndarray] = {}

    def _cpu(self):
        from runtime.backends.onnxruntime import ORTBackend

        return ORTBackend(self.folder / "lsanet_x4_fp32.onnx", "fp32", "cpu")

    @property
    def outputs(self) -> dict[str, dict[str, np.ndarray]]:
        if self._outputs is not None:
            return self._outputs
        self._outputs = {}
        with self._cpu() as ort:
            self._outputs["onnxruntime-cpu-fp32"] = {k: np.clip(ort.infer(photo_tile(*s)), 0, 1) for k, s in SHAPES.items()}
        try:
            import torch

            from export.checkpoint import load_checkpoint
        except ImportError:
            self.report.add("SKIP", "pytorch reference", "torch is not installed: backends compared with ONNX Runtime CPU only")
            return self._outputs
        if self.ckpt is None or not self.ckpt.is_file():
            self.report.add("SKIP", "pytorch reference", f"no checkpoint at {self.ckpt}")
            return self._outputs
        model = load_checkpoint(self.ckpt)
        with torch.no_grad():
            self._outputs["pytorch"] = {
                k: np.clip(model(torch.from_numpy(photo_tile(*s))).numpy(), 0, 1) for k, s in SHAPES.items()
            }
        return self._outputs

    def tiled(self, image: np.ndarray, config) -> np.ndarray:
        """`image` through the tiler with `config` on ONNX Runtime CPU FP32."""
        from runtime.tiling import upscale

        key = (image.shape, config)
        if key not in self._tiled:
            with self._cpu() as ort:
                self._tiled[key] = upscale(image, ort.infer_pixels, config)
        return self._tiled[key]

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


def check_tiles(label: str, backend: Backend, refs: References, report: Report) -> None:
    """A multi-tile image against the same tiling on ONNX Runtime CPU FP32 (FP16 bounds, plus one grey level
    for the rounding of both to 8 bits), then per-tile throughput at the default tile on a large image."""
    from runtime.tiling import count_tiles, upscale
    from runtime.upscaler import tile_config

    image = photo_rgb(*MULTI_TILE["shape"])
    config = tile_config(backend.limits, MULTI_TILE["tile"])
    tiles = count_tiles(*image.shape[:2], config)
    out = upscale(image, backend.infer_pixels, config)
    result = compare(refs.tiled(image, config) / 255.0, out / 255.0)
    ok = tiles > 1 and result.psnr >= THRESHOLDS.fp16_min_psnr and result.max_abs <= THRESHOLDS.fp16_max_abs + 1 / 255
    report.judge(f"{label} multi-tile", ok, f"{image.shape[1]}x{image.shape[0]} in {tiles} tiles of {config.tile} "
                 f"(overlap {config.overlap}) vs the same tiling on onnxruntime-cpu-fp32: PSNR {result.psnr:.1f} dB, "
                 f"max abs {result.max_abs * 255:.0f}/255", tiles=tiles, parity=result.as_dict())  # fmt: skip
    big = photo_rgb(THROUGHPUT_SIDE, THROUGHPUT_SIDE)
    config = tile_config(backend.limits)
    tiles = count_tiles(*big.shape[:2], config)

    def timed(cfg) -> float:
        start = time.perf_counter()
        upscale(big, backend.infer_pixels, cfg)
        return time.perf_counter() - start

    timed(config)  # warm: the tile shapes of this image (TensorRT-RTX specialises per shape)
    one = dataclasses.replace(config, in_flight=1)
    # Interleaved rounds: as the runtime runs (its batches in flight), and one batch at a time beside it.
    rounds = [(timed(config), timed(one)) for _ in range(3)] if config.in_flight > 1 else [(timed(config),) * 2] * 3
    wall = statistics.median(r[0] for r in rounds)
    report.add("PASS", f"{label} throughput", f"{THROUGHPUT_SIDE}x{THROUGHPUT_SIDE} in {tiles} tiles of {config.tile}: "
               f"{1000 * wall / tiles:.1f} ms per tile, {tiles / wall:.2f} tiles/s, "
               f"{(THROUGHPUT_SIDE * 4) ** 2 / wall / 1e6:.1f} output MPix/s (tiling and 8-bit conversion included, "
               f"{config.in_flight} batch(es) in flight, median of 3)",
               tiles=tiles, tile=config.tile, wall_s=wall, ms_per_tile=1000 * wall / tiles,
               in_flight=config.in_flight)  # fmt: skip
    if config.in_flight > 1:
        gain = statistics.median(single / both for both, single in rounds)
        report.add("PASS", f"{label} in flight", f"{config.in_flight} batches in flight are {gain:.2f}x as fast as one "
                   f"(median of 3 interleaved rounds; {1000 * statistics.median(r[1] for r in rounds) / tiles:.1f} ms per "
                   f"tile with one)", speedup=gain)  # fmt: skip


def cache_state(backend: Backend) -> str:
    accepted = getattr(backend, "runtime_cache_accepted", None)
    if getattr(backend, "flavor", None) != "rtx":
        return "n/a"
    return {True: "accepted", False: "REJECTED (the JIT compiled again)", None: "none on disk (the JIT compiled)"}[accepted]


def exercise(spec: Spec, refs: References, memory: DeviceMemory, report: Report, info: dict | None = None) -> None:
    """Load cold (time, device memory), run (shape matrix, multi-tile, throughput), unload, the load/unload
    loop, the warm load in a fresh process. The backend counts as run on the GPU once it has loaded and run."""
    info = info or {}
    backend = spec.make()
    free_before, memory_error = memory.try_free()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            backend.activate()
        except BackendError as exc:
            report.add("FAIL", f"{spec.label} load", str(exc) + (f" (before it, {memory_error})" if memory_error else ""), **info)
            return
        cold = time.perf_counter() - start
    try:
        if memory_error and memory.source is not None:  # it loaded, yet the memory query failed: not a GPU to trust
            raise CudaCallError(memory_error)
        used = None if free_before is None else free_before - memory.free()
        validity = "; ".join(str(w.message) for w in caught if "suboptimal" in str(w.message).lower()) or "VALID"
        report.add("PASS", f"{spec.label} load", f"{backend.describe()}: cold load {cold:.1f} s, runtime cache "
                   f"{cache_state(backend)}, device memory while loaded "
                   f"{f'{used} MiB' if used is not None else memory.missing}, validity {validity}, 8-bit tiles "
                   f"converted {'by the backend' if backend.converts_pixels else 'on the host'}",
                   context_cold_s=cold, device_memory_mib=used, runtime_cache=cache_state(backend), validity=validity,
                   converts_pixels=backend.converts_pixels, **info)  # fmt: skip
        backend.infer(photo_tile(*SHAPES["min 16x16"]))
        report.gpu_ran[spec.label] = backend.describe()
        refs.shape_matrix(spec.label, backend, report)
        check_tiles(spec.label, backend, refs, report)
    finally:
        backend.deactivate()
    load_loop(spec, backend, memory, free_before, report)
    warm_load(spec, cold, report)


def load_loop(spec: Spec, backend: Backend, memory: DeviceMemory, free_first: int | None, report: Report) -> None:
    """LOAD_CYCLES x (load, one inference, unload): free device memory after each unload must come back to
    what it was after the first unload (what the first load keeps, the CUDA context and kernel modules, is
    reported, not judged)."""
    name = f"{spec.label} load/unload x{LOAD_CYCLES}"
    if memory.source is None:
        report.add("SKIP", name, memory.missing)
        return
    baseline = memory.free()
    after, accepted = [], []
    for _ in range(LOAD_CYCLES):
        backend.activate()
        try:
            backend.infer(photo_tile(*SHAPES["min 16x16"]))
            accepted.append(cache_state(backend))
        finally:
            backend.deactivate()
        after.append(memory.free())
    lost = baseline - min(after)
    kept = None if free_first is None else free_first - baseline
    report.judge(name, lost <= LEAK_TOLERANCE_MIB,
                 f"free device memory after each unload {after} MiB, after the first {baseline} MiB: {lost} MiB not "
                 f"returned (allowed {LEAK_TOLERANCE_MIB}); kept by the first load {kept} MiB; runtime cache "
                 f"{sorted(set(accepted))}", free_after_mib=after, baseline_mib=baseline, leaked_mib=lost,
                 kept_by_first_load_mib=kept)  # fmt: skip


def warm_load(spec: Spec, cold: float, report: Report) -> None:
    """The second run as a user meets it: a fresh process, after the runtime cache exists. For TensorRT-RTX the
    runtime cache must have been accepted (else every run compiles again)."""
    run = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--load-probe", json.dumps(dataclasses.asdict(spec))],
                         cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)  # fmt: skip
    try:
        probe = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        probe = {"error": f"exit {run.returncode}: {(run.stderr.strip().splitlines() or ['no output'])[-1]}"}
    name = f"{spec.label} warm load (fresh process)"
    if "error" in probe:
        report.add("FAIL", name, probe["error"])
        return
    ok = probe["runtime_cache"] in ("accepted", "n/a")
    report.judge(name, ok, f"load {probe['load_s']:.2f} s (cold in this process {cold:.1f} s), first inference "
                 f"{probe['first_infer_s'] * 1000:.0f} ms, runtime cache {probe['runtime_cache']}",
                 context_warm_s=probe["load_s"], first_infer_s=probe["first_infer_s"], runtime_cache=probe["runtime_cache"])  # fmt: skip


def load_probe(spec_json: str) -> int:
    """--load-probe: load one backend in this (fresh) process, run one tile, print one JSON line."""
    spec = Spec(**json.loads(spec_json))
    backend = spec.make()
    start = time.perf_counter()
    try:
        backend.activate()
    except BackendError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    loaded = time.perf_counter() - start
    try:
        start = time.perf_counter()
        backend.infer(np.full((1, 3, 64, 64), 0.5, np.float32))
        first = time.perf_counter() - start
        state = cache_state(backend)
    finally:
        backend.deactivate()
    print(json.dumps({"load_s": loaded, "first_infer_s": first, "runtime_cache": state}))
    return 0


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


def check_engine(flavor: str, folder: Path, device: CudaDevice | None, refs: References, memory: DeviceMemory,
                 report: Report) -> None:  # fmt: skip
    """An engine flavour of the export: why not, else everything `exercise` does."""
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
    sidecar = TensorRTBackend(engine).sidecar
    built = {k: v for k, v in manifest.get("timings_s", {}).items() if k.startswith(MODULES[flavor])}
    info = {"build_s": built, "io": sidecar["io"], "targets": sidecar["target_compute_capabilities"]}
    if device is None:
        report.add("SKIP", label, "needs an NVIDIA GPU to run", **info)
        return
    try:
        trt, _ = gpu_modules(flavor)
        check_compatibility(engine, sidecar, trt.__version__, device.compute_capability)
    except BackendError as exc:
        report.add("SKIP", label, str(exc), **info)
        return
    exercise(Spec(label, "tensorrt", str(engine), sidecar["precision"]), refs, memory, report, info)


def check_ort_cuda(folder: Path, device: CudaDevice | None, refs: References, memory: DeviceMemory, report: Report) -> None:
    from runtime.backends.onnxruntime import cuda_provider_available

    for precision in ("fp32", "fp16"):
        label = f"onnxruntime-cuda {precision}"
        if device is None:
            report.add("SKIP", label, "needs an NVIDIA GPU")
        elif not cuda_provider_available():
            report.add("SKIP", label, "ONNX Runtime's CUDA provider is not available (install onnxruntime-gpu)")
        else:
            exercise(Spec(label, "onnxruntime", str(folder / f"lsanet_x4_{precision}.onnx"), precision), refs, memory, report)


def check_torch_cuda(ckpt: Path, device: CudaDevice | None, refs: References, memory: DeviceMemory, report: Report) -> None:
    """PyTorch on CUDA (runtime/backends/pytorch.py, TorchBackend(ckpt, device="cuda")): the GPU path where no
    engine runs, e.g. on SM90, which TensorRT-RTX does not support."""
    for precision in ("fp32", "fp16"):
        label = f"torch-cuda {precision}"
        if device is None:
            report.add("SKIP", label, "needs an NVIDIA GPU")
            continue
        if importlib.util.find_spec("torch") is None:
            report.add("SKIP", label, "torch is not installed (the [export] extra)")
            continue
        import torch

        if not torch.cuda.is_available():
            report.add("SKIP", label, f"torch {torch.__version__} does not see CUDA (a CPU build, or no usable GPU)")
        elif not ckpt.is_file():
            report.add("SKIP", label, f"no checkpoint at {ckpt} (pass --ckpt)")
        else:
            exercise(Spec(label, "torch", str(ckpt), precision), refs, memory, report)


# The FP16 GPU backends the FP32 rerun is tried on, in `auto` order: (label in the report, --backend name).
RERUN_ON = (("tensorrt_rtx engine", "tensorrt-rtx"), ("tensorrt engine", "tensorrt"),
            ("onnxruntime-cuda fp16", "onnxruntime"), ("torch-cuda fp16", "torch"))  # fmt: skip


def check_fp32_rerun(folder: Path, report: Report) -> None:
    """The Upscaler's FP32 fallback for NaN/Inf tiles (runtime/upscaler.py _rerun_fp32), as upscale.py runs it:
    an Upscaler on the first FP16 GPU backend that ran (ONNX Runtime CPU FP16 where none did), whose first
    tile comes back with a NaN; the tile must be rerun in FP32 (with the warning) and the image come out as
    the clean run's within the FP16 bounds. The export's model, as upscale.py --engines-dir loads it (torch-cuda
    gets the checkpoint the manifest names)."""
    from runtime.tiling import count_tiles
    from runtime.upscaler import Upscaler

    label, name = next(((label, name) for label, name in RERUN_ON if label in report.gpu_ran), (None, "onnxruntime"))
    where = label or "no GPU backend ran, so on the CPU"
    image = photo_rgb(*RERUN["shape"])
    with Upscaler(backend=name, precision="fp16", tile=RERUN["tile"], engines_dir=folder) as up:
        backend, fallback = up.choice.backend, up.choice.fallback
        if fallback is None:
            report.add("FAIL", "fp32 rerun", f"{backend.describe()} ({where}) has no FP32 fallback: a NaN/Inf tile is an "
                       "error (runtime/backends/choose.py _fallback)")  # fmt: skip
            return
        clean = up(image)
        real, calls = backend.infer_pixels, []

        def poisoned(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out, broken = real(tiles)
            if not calls:  # the first tile's output held NaN: garbage pixels, flagged
                out[0], broken[0] = 0, True
            calls.append(len(tiles))
            return out, broken

        backend.infer_pixels = poisoned  # what upscale_image runs: choice.backend.infer_pixels
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                start = time.perf_counter()
                rerun = up(image)
                wall = time.perf_counter() - start
        finally:
            del backend.infer_pixels
        said = [str(w.message) for w in caught if "FP32" in str(w.message)]
        off = int(np.abs(rerun.astype(int) - clean.astype(int)).max())
        tiles = count_tiles(*image.shape[:2], up.config)
        ok = bool(said) and fallback.active and fallback.precision == "fp32" and off <= round(THRESHOLDS.fp16_max_abs * 255) + 1
        report.judge("fp32 rerun", ok, f"{backend.describe()} ({where}): the first of {tiles} tiles came back with a NaN; "
                     f"warned {said or 'nothing'}; rerun on {fallback.describe() if fallback.active else 'nothing'}; "
                     f"result within {off}/255 of the clean run; {wall:.2f} s with the fallback's first load",
                     backend=backend.describe(), fallback=fallback.describe(), max_abs_levels=off)  # fmt: skip


def set5_reference() -> dict[str, float]:
    """SET5_REFERENCE_Y from tests/test_model.py, read without importing it (that needs torch and pytest)."""
    tree = ast.parse((ROOT / "tests" / "test_model.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SET5_REFERENCE_Y")
    return ast.literal_eval(node.value)


def on_gpu(backend_line: str) -> bool:
    """Whether upscale.py's `backend: ...` line names a GPU backend (TensorRT, or a CUDA device)."""
    described = backend_line.removeprefix("backend:").split(" - ")[0].strip()  # its describe(), not the reason
    return described.startswith("tensorrt") or " CUDA " in f" {described} "


def check_set5(folder: Path, scratch: Path, report: Report) -> None:
    """upscale.py --backend auto on Set5 as a user runs it: chosen backend (on the GPU or not), Y-PSNR against
    the reference, time."""
    import cv2

    name, source = "set5 upscale.py --backend auto", SHARED / "data" / "Set5"
    if not source.is_dir():
        report.add("SKIP", name, f"{source} not found")
        return
    out = scratch / "set5"
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(ROOT / "upscale.py"), str(source / "*_LR.png"), str(out), "--backend", "auto",
                          "--engines-dir", str(folder)], cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - start
    chosen = next((line for line in run.stderr.splitlines() if line.startswith("backend:")), "backend: ?")
    if run.returncode != 0:
        report.judge(name, False, f"exit {run.returncode}: {run.stderr.strip().splitlines()[-1:]}")
        return
    measured = {}
    for image in set5_reference():
        sr = cv2.imread(str(out / image.replace(".png", "_x4.png")))[..., ::-1]
        hr = cv2.imread(str(source / image.replace("_LR", "_HR")))[..., ::-1]
        measured[image] = y_psnr(sr, hr)
    worst = max(abs(measured[n] - set5_reference()[n]) for n in measured)
    gpu = on_gpu(chosen)
    report.judge(name, worst <= SET5_TOLERANCE_DB,
                 f"{chosen} ({'on the GPU' if gpu else 'on the CPU'}); Y-PSNR {', '.join(f'{v:.2f}' for v in measured.values())} "
                 f"dB (worst off the reference by {worst:.3f} dB, allowed {SET5_TOLERANCE_DB}); wall {wall:.1f} s",
                 y_psnr=measured, wall_s=wall, on_gpu=gpu)  # fmt: skip


def check_suite(device: CudaDevice | None, scratch: Path, report: Report) -> None:
    """The suite's GPU tests (tests/test_trt_runtime.py), in a subprocess as CI would run them."""
    name = "suite GPU tests"
    if device is None:
        report.add("SKIP", name, "no NVIDIA GPU here: they skip with 'needs an NVIDIA GPU'")
        return
    if importlib.util.find_spec("pytest") is None:
        report.add("SKIP", name, "pytest is not installed, so the suite's GPU tests did not run (pip install -e '.[test]')")
        return
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--basetemp={scratch / 'pytest'}",
                          "tests/test_trt_runtime.py"], cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
    lines = run.stdout.strip().splitlines() or run.stderr.strip().splitlines() or [f"no output (exit {run.returncode})"]
    skipped = [line.split(": ", 1)[-1] for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    ok = run.returncode == 0
    report.judge(name, ok, f"pytest tests/test_trt_runtime.py: {lines[-1]}" + (f"; skipped: {sorted(set(skipped))}" if skipped else ""),
                 exit=run.returncode, skipped=skipped)  # fmt: skip


def gpu_verdict(device: CudaDevice | None, report: Report) -> None:
    """A GPU machine passes only if some GPU backend ran on its GPU."""
    name = "gpu used"
    if device is None:
        report.add("SKIP", name, "no NVIDIA GPU here")
    elif report.gpu_ran:
        report.add("PASS", name, f"{device.name} ({device.sm}) ran: {', '.join(report.gpu_ran.values())}", ran=report.gpu_ran)
    else:
        report.add("FAIL", name, f"a GPU is present ({device.name}, {device.sm}, driver {device.driver}) but no GPU backend "
                   "ran on it: see the SKIP and FAIL lines above")  # fmt: skip


def guarded(report: Report, name: str, check: Callable[..., None], *args: object) -> None:
    """Run one section; an unexpected exception is that section's FAIL, and the other sections still run."""
    try:
        check(*args)
    except Exception as exc:  # noqa: BLE001 - a check must report, not end the run
        report.add("FAIL", name, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, help="an export.py output folder (default: export into a temporary one)")
    parser.add_argument("--ckpt", type=Path, default=SHARED / "weights" / "team44_LSANet.pth", help="checkpoint to export, and for PyTorch on CUDA")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="where the JSON report goes")
    parser.add_argument("--load-probe", metavar="SPEC", help=argparse.SUPPRESS)  # the warm load, in a fresh process
    args = parser.parse_args(argv)
    if args.load_probe:
        return load_probe(args.load_probe)
    report = Report()
    device = cuda_device()
    report.environment = environment(device)
    for key, value in report.environment.items():
        print(f"ENV  {key}: {value}")
    memory = DeviceMemory()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        os.environ["LSANET_CACHE"] = str(Path(scratch) / "cache")  # a cold runtime cache, and no stale one
        folder = export_folder(args, device, Path(scratch), report)
        if folder is not None and (folder / MANIFEST).is_file():
            refs = References(folder, args.ckpt, report)
            for flavor in MODULES:
                guarded(report, f"{MODULES[flavor]} engine", check_engine, flavor, folder, device, refs, memory, report)
            guarded(report, "onnxruntime-cuda", check_ort_cuda, folder, device, refs, memory, report)
            guarded(report, "torch-cuda", check_torch_cuda, args.ckpt, device, refs, memory, report)
            guarded(report, "fp32 rerun", check_fp32_rerun, folder, report)
            guarded(report, "set5 upscale.py --backend auto", check_set5, folder, Path(scratch), report)
        else:
            report.add("SKIP", "GPU backends, FP32 rerun and Set5", "no export to check")
        check_suite(device, Path(scratch), report)
    gpu_verdict(device, report)
    args.out.write_text(json.dumps({"environment": report.environment, "checks": report.checks, "gpu_ran": report.gpu_ran,
                                    "summary": report.summary()}, indent=2, default=float) + "\n")  # fmt: skip
    print(report.summary())
    return 0 if report.count("FAIL") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
