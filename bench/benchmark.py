"""CPU/GPU throughput of every backend that runs here, side by side in one process, on real photos.

    python -m bench.benchmark --ckpt ../shared/weights/team44_LSANet.pth [--engines-dir engines] [--repeats 7]

Needs `python export.py --ckpt ... --fp16` first (for the ONNX graphs). Timing is round-robin, so that the
machine's drift hits every backend alike: all backends are loaded and warmed up, then each round runs one
256x256 LR tile (a crop of a real photo) on each; then a 1000x872 photo, whole (one pass) and with the
default tiling, on each. Reported: medians, output megapixels per second, the ratio to the reference PyTorch
eager model, and the cost of tiling. Memory is measured afterwards, one backend at a time: the peak RSS
(sampled from /proc) of a fresh load plus the tiled photo, above the process's baseline, and for the
whole-image pass.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage import data

from runtime.backends.base import Backend
from runtime.tiling import TileConfig, upscale

TILE = 256


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakRSS:
    """Samples the resident set every 5 ms while active; `peak` is the highest seen."""

    def __enter__(self) -> PeakRSS:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class EagerReference(Backend):
    """The challenge's way of running LSANet: the network in PyTorch eager mode, FP32, default threads."""

    name = "PyTorch eager (reference)"

    def __init__(self, ckpt: Path, training_form: bool = False) -> None:
        super().__init__()
        self.ckpt, self.training_form = ckpt, training_form
        if training_form:
            self.name = "PyTorch eager, training form"

    def activate_impl(self) -> None:
        import torch

        from export.checkpoint import load_checkpoint
        from export.model import LSANet

        model = load_checkpoint(self.ckpt)
        if self.training_form:
            model = LSANet(deploy=False).eval()  # same cost whatever the weights: six-branch RCBs
        self._torch, self._model = torch, model

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            return self._model(self._torch.from_numpy(batch)).numpy()


def candidates(ckpt: Path, engines: Path) -> list[Backend]:
    from core.artifacts import onnx_file
    from core.nvidia import cuda_device
    from runtime.backends.onnxruntime import ORTBackend
    from runtime.backends.openvino import OpenVINOBackend
    from runtime.backends.pytorch import TorchBackend

    fp32, fp16 = engines / onnx_file("fp32"), engines / onnx_file("fp16")
    backends: list[Backend] = [
        EagerReference(ckpt),
        EagerReference(ckpt, training_form=True),
        OpenVINOBackend(fp32),
        ORTBackend(fp32, "fp32", "cpu"),
        ORTBackend(fp16, "fp16", "cpu"),
        TorchBackend(ckpt, device="cpu"),
    ]
    if cuda_device() is not None:
        from runtime.backends.tensorrt import TensorRTBackend

        for engine in sorted(engines.glob("*.engine")):
            backends.append(TensorRTBackend(engine, fp32))
        backends.append(ORTBackend(fp16, "fp16", "cuda"))
    return backends


def cpu_name() -> str:
    """The host CPU as lscpu names it (CPU figures differ between hosts: each is quoted with its CPU)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown")


def round_robin(tasks: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each task, run in turn `rounds` times after one warm-up round."""
    for task in tasks.values():
        task()
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(rounds):
        for name, task in tasks.items():
            start = time.perf_counter()
            task()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_rss(backend: Backend, photo: np.ndarray, config: TileConfig) -> float:
    """MB above the baseline while loading `backend` and upscaling `photo` with `config`."""
    gc.collect()
    baseline = rss_mb()
    with PeakRSS() as rss, backend:
        upscale(photo, backend.infer_pixels, config)
    return rss.peak - baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    tile = np.ascontiguousarray(data.astronaut()[128 : 128 + TILE, 128 : 128 + TILE].transpose(2, 0, 1)[None])
    tile = tile.astype(np.float32) / 255.0
    photo = data.hubble_deep_field()
    photo_mp, tile_mp = photo.shape[0] * photo.shape[1] * 16 / 1e6, TILE * TILE * 16 / 1e6
    whole_config, tiled_config = TileConfig(tile=10**6), TileConfig()

    loaded: list[Backend] = []
    for backend in candidates(args.ckpt, args.engines_dir):
        try:
            backend.activate()
            loaded.append(backend)
        except Exception as exc:  # a backend that cannot run here is reported, not fatal
            print(f"{backend.describe()}: skipped ({str(exc).splitlines()[0]})")
    names = [b.describe() for b in loaded]
    per_tile = round_robin({n: (lambda b=b: b.infer(tile)) for n, b in zip(names, loaded)}, args.repeats)
    photo_rounds = max(1, args.repeats // 3)
    photos = {}
    for n, b in zip(names, loaded):
        if "training form" not in n:
            photos[f"{n} whole"] = lambda b=b: upscale(photo, b.infer_pixels, whole_config)
            photos[f"{n} tiled"] = lambda b=b: upscale(photo, b.infer_pixels, tiled_config)
    photo_times = round_robin(photos, photo_rounds)
    for b in loaded:
        b.deactivate()
    memory = {}
    for n, b in zip(names, loaded):
        if "training form" not in n:
            memory[n] = (peak_rss(b, photo, tiled_config), peak_rss(b, photo, whole_config))

    eager = per_tile[names[0]]
    print(f"\n256x256 LR tile (crop of astronaut.png): median of {args.repeats} round-robin rounds; 1000x872 photo "
          f"(hubble_deep_field.png) -> 4000x3488: median of {photo_rounds}; after a warm-up round\n")  # fmt: skip
    print("| backend | s per tile | tile MP/s out | x PyTorch eager | photo whole MP/s | photo tiled MP/s"
          " | tiling cost | peak RSS MB tiled / whole |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for n in names:
        row = f"| {n} | {per_tile[n]:.3f} | {tile_mp / per_tile[n]:.1f} | {eager / per_tile[n]:.2f} |"
        if n in memory:
            whole, tiled = photo_times[f"{n} whole"], photo_times[f"{n} tiled"]
            row += f" {photo_mp / whole:.1f} | {photo_mp / tiled:.1f} | {tiled / whole - 1:+.0%} |"
            row += f" {memory[n][0]:.0f} / {memory[n][1]:.0f} |"
        else:
            row += " - | - | - | - |"
        print(row)


if __name__ == "__main__":
    main()
