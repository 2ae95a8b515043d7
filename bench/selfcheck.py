"""What the load-time self-check (core/canary.py) costs per backend: median of repeated runs, next to the
backend's own load time, on an exported folder.

    python -m bench.selfcheck --engines-dir engines
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from runtime.backends.choose import self_check
from runtime.backends.onnxruntime import ORTBackend
from runtime.backends.openvino import OpenVINOBackend
from runtime.model.source import Model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    folder = args.engines_dir
    model = Model("bench", canary=folder / "lsanet_x4_canary.npz")
    backends = {
        "openvino fp32": lambda: OpenVINOBackend(folder / "lsanet_x4_fp32.onnx"),
        "onnxruntime cpu fp32": lambda: ORTBackend(folder / "lsanet_x4_fp32.onnx", "fp32", "cpu"),
        "onnxruntime cpu fp16": lambda: ORTBackend(folder / "lsanet_x4_fp16.onnx", "fp16", "cpu"),
    }
    print(f"{'backend':<22} {'load s':>7} {'first check ms':>15} {'check ms (median)':>18}")
    for name, make in backends.items():
        backend = make()
        start = time.perf_counter()
        backend.activate()
        load = time.perf_counter() - start
        start = time.perf_counter()
        self_check(backend, model)
        first = time.perf_counter() - start
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            self_check(backend, model)
            times.append(time.perf_counter() - start)
        backend.deactivate()
        print(f"{name:<22} {load:7.2f} {first * 1000:15.1f} {statistics.median(times) * 1000:18.1f}")
    # OpenVINO compiles kernels per new input shape on first use: what the check adds to a load is the
    # first 256x256 tile's time after it against a fresh backend's first tile.
    tile = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    for checked in (False, True):
        backend = backends["openvino fp32"]()
        backend.activate()
        start = time.perf_counter()
        if checked:
            self_check(backend, model)
        backend.infer(tile)
        print(f"openvino: {'self-check + ' if checked else ''}first 256x256 tile {time.perf_counter() - start:.2f} s")
        backend.deactivate()


if __name__ == "__main__":
    main()
