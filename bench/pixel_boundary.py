"""Per tile on the CPU: core/boundary.py's 8-bit conversion inside the graph against the same conversion on
the host around the float graph, side by side, interleaved, in one process. The figures behind the choice
that ONNX Runtime converts in its graph on CUDA only, and OpenVINO never.

    python -m bench.pixel_boundary [--engines-dir engines] [--rounds 9]

Needs `python export.py --ckpt ... --fp16` first. Tiles are crops of a real photo, 256x256 and 512x512 LR;
each runtime runs with the threads it would use in upscale.py (OpenVINO's wrapped graph is compiled here
with the backend's settings, since the backend itself converts on the host). Prints the host CPU, the median ms per
tile of each path, the speed-up, and how far apart the two paths' bytes are.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage import data

from bench.benchmark import cpu_name, round_robin
from core.boundary import nonfinite, wrap_onnx
from runtime.backends.onnxruntime import ORTBackend
from runtime.backends.openvino import OpenVINOBackend
from runtime.cores import usable_cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    fp32 = args.engines_dir / "lsanet_x4_fp32.onnx"
    photo = data.astronaut()
    print(f"host CPU: {cpu_name()}; median of {args.rounds} interleaved rounds\n")
    print("| runtime | tile | host conversion, ms | conversion in the graph, ms | speed-up | bytes apart (max, count) |")
    print("|---|---|---|---|---|---|")
    pairs = {
        "openvino fp32": (OpenVINOBackend(fp32), OpenVINOBackend(fp32)),
        "onnxruntime cpu fp32": (ORTBackend(fp32, "fp32", "cpu"), ORTBackend(fp32, "fp32", "cpu", graph_boundary=True)),
    }
    for name, (host, graph) in pairs.items():
        with host, graph:
            run_graph = graph.infer_pixels if name.startswith("onnxruntime") else openvino_wrapped(fp32)
            for side in (256, 512):
                tiles = np.ascontiguousarray(photo[:side, :side][None])
                times = round_robin({"host": lambda: host.infer_pixels(tiles), "graph": lambda: run_graph(tiles)}, args.rounds)
                off = np.abs(run_graph(tiles)[0].astype(int) - host.infer_pixels(tiles)[0])
                print(f"| {name} | {side} | {times['host'] * 1e3:.1f} | {times['graph'] * 1e3:.1f} | "
                      f"{times['host'] / times['graph']:.2f}x | {off.max()}, {np.count_nonzero(off)} |")  # fmt: skip


def openvino_wrapped(onnx: Path) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The wrapped graph compiled as OpenVINOBackend compiles its graph (FP32, latency hint, its threads)."""
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": usable_cores()}
    request = core.compile_model(core.read_model(wrap_onnx(onnx.read_bytes())), "CPU", config).create_infer_request()

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = request.infer({0: tiles})
        return result[0].copy(), nonfinite(result[1])

    return run

if __name__ == "__main__":
    main()
