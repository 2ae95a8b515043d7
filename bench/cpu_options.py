"""The CPU backend options measured before choosing the defaults, side by side in one process.

    python -m bench.cpu_options [--onnx engines/lsanet_x4_fp32.onnx] [--repeats 7]

ONNX Runtime graph optimisation levels and thread counts, OpenVINO's precision and performance hints and a
batch of two tiles, each on one 256x256 LR tile of a real photo (round-robin medians after a warm-up), with the max abs
difference of its output from ONNX Runtime's basic-level output (a plain FP32 reference).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
from skimage import data

from bench.benchmark import round_robin


def ort_session(onnx: Path, level: ort.GraphOptimizationLevel, threads: int):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"lr": x})[0]


def ov_request(onnx: Path, config: dict):
    request = ov.Core().compile_model(str(onnx), "CPU", config).create_infer_request()
    return lambda x: request.infer({0: x})[0].copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("engines/lsanet_x4_fp32.onnx"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    x = np.ascontiguousarray(data.astronaut()[128:384, 128:384].transpose(2, 0, 1)[None]).astype(np.float32) / 255
    levels = ort.GraphOptimizationLevel
    runners = {
        "onnxruntime basic, 2 threads": ort_session(args.onnx, levels.ORT_ENABLE_BASIC, 2),
        "onnxruntime extended, 2 threads": ort_session(args.onnx, levels.ORT_ENABLE_EXTENDED, 2),
        "onnxruntime all, 2 threads": ort_session(args.onnx, levels.ORT_ENABLE_ALL, 2),
        "onnxruntime extended, 1 thread": ort_session(args.onnx, levels.ORT_ENABLE_EXTENDED, 1),
        "openvino default precision (bf16 where the CPU reports it), latency": ov_request(
            args.onnx, {"PERFORMANCE_HINT": "LATENCY"}
        ),
        "openvino f32, latency, 2 threads": ov_request(
            args.onnx, {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
        ),
        "openvino f32, throughput": ov_request(args.onnx, {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}),
    }
    reference = runners["onnxruntime basic, 2 threads"](x)
    tasks = {name: (lambda run=run: run(x)) for name, run in runners.items()}
    pair = np.concatenate([x, x])
    batched = runners["openvino f32, latency, 2 threads"]
    tasks["openvino f32, latency, batch of 2 tiles (time per tile)"] = lambda: batched(pair)
    times = round_robin(tasks, args.repeats)
    times["openvino f32, latency, batch of 2 tiles (time per tile)"] /= 2
    runners["openvino f32, latency, batch of 2 tiles (time per tile)"] = lambda x: batched(pair)[:1]
    print(f"CPU: {ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}, "
          f"OpenVINO capabilities {ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}\n")  # fmt: skip
    print("| option | s per 256x256 tile | max abs vs FP32 reference |\n|---|---|---|")
    for name, run in runners.items():
        print(f"| {name} | {times[name]:.3f} | {np.abs(run(x) - reference).max():.1e} |")


if __name__ == "__main__":
    main()
