"""OpenVINO CPU levers side by side in one process: model cache, bf16, uint8 NHWC I/O.

    python -m bench.openvino_levers [--onnx engines/lsanet_x4_fp32.onnx] [--repeats 7]

- Compile time without a cache and from a warm CACHE_DIR (a fresh Core each time).
- One 256x256 LR tile of a real photo, as the tiler meets it (uint8 HWC in, uint8 HWC out, conversions
  included): FP32 through the backend interface (float32 NCHW in [0, 1], the tiler's conversions in numpy),
  FP32 with the conversions done inside OpenVINO by its PrePostProcessor (uint8 NHWC in and out), and bf16
  where the CPU has it. Each with its difference from the FP32 interface path in 8-bit levels.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
from skimage import data

from bench.benchmark import round_robin
from runtime.backends.openvino import cpu_has_bf16

BASE = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2}


def compiled(onnx: Path, precision: str = "f32", cache: Path | None = None) -> ov.CompiledModel:
    config = {**BASE, "INFERENCE_PRECISION_HINT": precision, **({"CACHE_DIR": str(cache)} if cache else {})}
    return ov.Core().compile_model(str(onnx), "CPU", config)


def float_path(onnx: Path, precision: str):
    """The backend interface: the tiler's numpy conversions around a float32 NCHW request."""
    request = compiled(onnx, precision).create_infer_request()

    def run(tile: np.ndarray) -> np.ndarray:
        batch = np.empty((1, 3, *tile.shape[:2]), np.float32)
        np.multiply(tile.transpose(2, 0, 1), 1 / 255, out=batch[0], casting="unsafe")
        out = request.infer({0: batch})[0]
        np.clip(out, 0, 1, out=out)
        out *= 255
        np.rint(out, out=out)
        return out[0].transpose(1, 2, 0).astype(np.uint8)

    return run


def uint8_path(onnx: Path):
    """uint8 NHWC in and out, converted inside the graph (PrePostProcessor; clamp, scale, round as ops)."""
    from openvino import opset13 as ops
    from openvino.preprocess import PrePostProcessor

    model = ov.Core().read_model(str(onnx))
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    ppp.output().model().set_layout(ov.Layout("NCHW"))
    ppp.output().tensor().set_layout(ov.Layout("NHWC"))

    def to_levels(node):
        clamped = ops.clamp(node, 0.0, 1.0)
        scaled = ops.multiply(clamped, ops.constant(np.float32(255.0)))
        return ops.round(scaled, "half_to_even").output(0)

    ppp.output().postprocess().custom(to_levels).convert_element_type(ov.Type.u8)
    request = ov.Core().compile_model(ppp.build(), "CPU", {**BASE, "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    return lambda tile: request.infer({0: tile[None]})[0][0].copy()


def compile_times(onnx: Path, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        compiled(onnx, cache=Path(folder))  # fills the cache
        tasks = {"no cache": lambda: compiled(onnx), "warm CACHE_DIR": lambda: compiled(onnx, cache=Path(folder))}
        return round_robin(tasks, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("engines/lsanet_x4_fp32.onnx"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    core = ov.Core()
    print(f"CPU: {core.get_property('CPU', 'FULL_DEVICE_NAME')}, OpenVINO {ov.__version__.split('-')[0]} "
          f"capabilities {core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}\n")  # fmt: skip

    start = time.perf_counter()
    times = compile_times(args.onnx, args.repeats)
    print(f"| compile | s (median of {args.repeats}) |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.3f} |")
    print()

    tile = np.ascontiguousarray(data.astronaut()[128:384, 128:384])
    paths = {"fp32, float32 NCHW interface": float_path(args.onnx, "f32"), "fp32, uint8 NHWC in/out (PrePostProcessor)": uint8_path(args.onnx)}
    if cpu_has_bf16():
        paths["bf16, float32 NCHW interface"] = float_path(args.onnx, "bf16")
    reference = paths["fp32, float32 NCHW interface"](tile)
    times = round_robin({name: (lambda run=run: run(tile)) for name, run in paths.items()}, args.repeats)
    base = times["fp32, float32 NCHW interface"]
    print("| path | s per tile | speed-up | max level diff | pixels differing |\n|---|---|---|---|---|")
    for name, run in paths.items():
        diff = np.abs(run(tile).astype(int) - reference)
        print(f"| {name} | {times[name]:.3f} | {base / times[name]:.2f}x | {diff.max()} | {np.mean(diff > 0):.4%} |")
    if not cpu_has_bf16():
        print("\nbf16: not measured, this CPU has no bfloat16 arithmetic")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
