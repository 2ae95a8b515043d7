"""Per tile on the CPU backends: the 8-bit path (core/boundary.py's conversion inside the backend's graph)
against the float path with the same conversion on the host, side by side, interleaved, in one process.

    python -m bench.pixel_boundary [--engines-dir engines] [--rounds 9]

Needs `python export.py --ckpt ... --fp16` first. Tiles are crops of a real photo, 256x256 and 512x512 LR;
each backend runs with the threads it would use in upscale.py. Prints the host CPU, the median ms per
tile of each path, the speed-up, and how far apart the two paths' bytes are.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage import data

from core.boundary import from_model, to_model
from runtime.backends.base import Backend
from runtime.backends.onnxruntime import ORTBackend
from runtime.backends.openvino import OpenVINOBackend


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def interleaved(tasks: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    fp32 = args.engines_dir / "lsanet_x4_fp32.onnx"
    backends: dict[str, Backend] = {"openvino fp32": OpenVINOBackend(fp32), "onnxruntime cpu fp32": ORTBackend(fp32, "fp32", "cpu")}
    photo = data.astronaut()
    print(f"host CPU: {cpu_name()}; median of {args.rounds} interleaved rounds\n")
    print("| backend | tile | float path + host conversion, ms | 8-bit path, ms | speed-up | bytes apart (max, count) |")
    print("|---|---|---|---|---|---|")
    for name, backend in backends.items():
        with backend:
            for side in (256, 512):
                tiles = np.ascontiguousarray(photo[:side, :side][None])
                host = lambda b=backend, t=tiles: from_model(b.infer(to_model(t)), np.uint8)  # noqa: E731
                graph = lambda b=backend, t=tiles: b.infer_pixels(t)  # noqa: E731
                times = interleaved({"host": host, "graph": graph}, args.rounds)
                off = np.abs(graph()[0].astype(int) - host()[0])
                print(f"| {name} | {side} | {times['host'] * 1e3:.1f} | {times['graph'] * 1e3:.1f} | "
                      f"{times['host'] / times['graph']:.2f}x | {off.max()}, {np.count_nonzero(off)} |")  # fmt: skip


if __name__ == "__main__":
    main()
