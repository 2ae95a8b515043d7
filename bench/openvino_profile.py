"""Where OpenVINO's time goes, per layer type and kernel, from its own per-node counters (PERF_COUNT).

    python -m bench.openvino_profile [--onnx engines/lsanet_x4_fp32.onnx] [--repeats 5] [--precision f32]

One 256x256 LR tile of a real photo, FP32 as the backend runs it (latency hint, 2 threads); each node's
real time is its mean over the runs after a warm-up, then summed by (layer type, kernel). OpenVINO CPU
reports for each node its mean over every run of the compiled model so far (ov::intel_cpu::PerfCount::avg),
the slow first run included, not the last run's time: `NodeClock` turns those means back into totals and
takes the difference.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import openvino as ov
from skimage import data


class NodeClock:
    """Per-node time of a freshly compiled OpenVINO CPU model with PERF_COUNT, run only through `infer`
    (the counters are the compiled model's, so it counts the runs)."""

    def __init__(self, compiled: ov.CompiledModel) -> None:
        self.request = compiled.create_infer_request()
        self.runs = 0

    def infer(self, inputs: dict) -> None:
        self.request.infer(inputs)
        self.runs += 1

    def totals(self) -> dict[str, tuple[float, str, str]]:
        """Each executed node: (ms over all runs so far, layer type, kernel)."""
        return {
            info.node_name: (info.real_time.total_seconds() * 1e3 * self.runs, info.node_type, info.exec_type)
            for info in self.request.profiling_info
            if info.status == info.Status.EXECUTED
        }


def mean_ms(before: dict[str, tuple[float, str, str]], after: dict[str, tuple[float, str, str]], runs: int) -> dict[str, float]:
    """Each node's mean ms per run over the `runs` runs between two `NodeClock.totals`."""
    return {node: (total - before.get(node, (0.0,))[0]) / runs for node, (total, _, _) in after.items()}


def profile(onnx: Path, precision: str, repeats: int) -> dict[tuple[str, str], tuple[float, int]]:
    """(layer type, kernel) -> (mean ms per run, node count)."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": True}
    clock = NodeClock(ov.Core().compile_model(str(onnx), "CPU", config))
    tile = data.astronaut()[128:384, 128:384].transpose(2, 0, 1)[None].astype(np.float32) / 255
    clock.infer({0: tile})
    before = clock.totals()
    for _ in range(repeats):
        clock.infer({0: tile})
    after = clock.totals()
    totals: dict[tuple[str, str], tuple[float, int]] = defaultdict(lambda: (0.0, 0))
    for node, ms in mean_ms(before, after, repeats).items():
        kind = after[node][1:]
        total, count = totals[kind]
        totals[kind] = (total + ms, count + 1)
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("engines/lsanet_x4_fp32.onnx"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="f32", help="f32 or bf16 (OpenVINO's names)")
    args = parser.parse_args()
    totals = profile(args.onnx, args.precision, args.repeats)
    whole = sum(ms for ms, _ in totals.values())
    print(f"CPU: {ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}, {args.precision}, sum of node times {whole:.1f} ms\n")
    print("| layer type | kernel | nodes | ms | share |\n|---|---|---|---|---|")
    for (node_type, exec_type), (ms, count) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        if ms >= 0.005 * whole:
            print(f"| {node_type} | {exec_type} | {count} | {ms:.1f} | {ms / whole:.1%} |")
    rest = [(ms, n) for ms, n in totals.values() if ms < 0.005 * whole]
    print(f"| (others, each < 0.5%) | | {sum(n for _, n in rest)} | {sum(ms for ms, _ in rest):.1f} | {sum(ms for ms, _ in rest) / whole:.1%} |")


if __name__ == "__main__":
    main()
