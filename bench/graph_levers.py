"""Two graph levers in OpenVINO CPU: c1 without its Concat, and the form of the reflect Pads.

    python -m bench.graph_levers --ckpt ../shared/weights/team44_LSANet.pth [--rounds 15] [--sizes 256 512] [--out DIR]

Exports variants of the deployed network (to a temporary folder, or DIR to keep them for
`python -m bench.openvino_profile --onnx DIR/NAME.onnx`) and runs each in OpenVINO CPU (FP32: LATENCY hint,
2 threads, INFERENCE_PRECISION_HINT f32) on a crop of a real photo. The variants run interleaved in one
process, in a new random order each round, so that load from other processes falls on all alike; printed:
the median ms per tile, the median over the rounds of the time relative to `concat-c1` in the same round,
the mean ms per run spent in the nodes the levers touch (c1's, Pad, Concat, Slice; from PERF_COUNT, run
after the timing on fresh compiled models, one variant after another), and the max abs difference from the
reference PyTorch FP32 model (the checkpoint, c1 over the Concat).
- concat-c1: the graph before: c1 as one 216 -> 36 Conv over the Concat of the six block outputs.
- split-c1: what export/onnx_export.py traces now: six 36 -> 36 Convs and their Adds, no Concat.
- split-c1-slice-pad: split-c1 with every reflect border built from Slices and Concats instead of a Pad.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import torch
import torch.nn.functional as F
from skimage import data
from torch import nn

from bench.benchmark import cpu_name
from bench.openvino_profile import NodeClock, mean_ms
from export.checkpoint import load_checkpoint
from export.model import ESB, LSANet
from export.onnx_export import export_fp32

CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"}


class SliceReflectDepthwise(nn.Module):
    """A reflect-padded 3x3 depthwise conv whose border rows and columns are Slices of the input, joined by
    Concat, then the conv without padding: the same values as Pad(mode=reflect), through other ONNX ops."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, :, 1:2], x, x[:, :, -2:-1]], dim=2)
        x = torch.cat([x[:, :, :, 1:2], x, x[:, :, :, -2:-1]], dim=3)
        return F.conv2d(x, self.conv.weight, self.conv.bias, groups=self.conv.groups)


def concat_c1(model: LSANet) -> LSANet:
    """A copy whose c1 runs as trained: one conv over the channel concatenation."""
    variant = copy.deepcopy(model)
    variant.c1.deploy = False
    return variant


def slice_pads(model: LSANet) -> LSANet:
    """A copy whose reflect Pads are built from Slices and Concats."""
    variant = copy.deepcopy(model)
    for module in variant.modules():
        if isinstance(module, ESB):
            module.dw = SliceReflectDepthwise(module.dw)
    return variant


def variants(deployed: LSANet) -> dict[str, LSANet]:
    """Name -> model; the first is the baseline of the ratios."""
    return {"concat-c1": concat_c1(deployed), "split-c1": deployed, "split-c1-slice-pad": slice_pads(deployed)}


def tile(size: int) -> np.ndarray:
    """A size x size crop of a real photo (the astronaut, tiled if the photo is smaller), N x 3 x H x W in [0, 1]."""
    photo = np.tile(data.astronaut(), (2, 2, 1))[:size, :size]
    return np.ascontiguousarray(photo.transpose(2, 0, 1)[None], dtype=np.float32) / 255


def runner(request: ov.InferRequest, x: np.ndarray) -> Callable[[], np.ndarray]:
    """One inference of `x`, returning the output."""
    return lambda: request.infer({0: x})[0]


def is_lever_node(name: str, node_type: str) -> bool:
    """The nodes the levers touch: c1's, the Pads, and the Concats and Slices that join the block outputs or
    build reflect borders (ESA's Concats of shape values never run: OpenVINO does them in shape inference)."""
    return name.startswith("c1/") or node_type in ("Pad", "Concat", "Slice", "StridedSlice")


def lever_ms(compiled: ov.CompiledModel, x: np.ndarray, rounds: int) -> float:
    """Mean ms per run spent in the lever nodes, over `rounds` runs after a warm-up (PERF_COUNT)."""
    clock = NodeClock(compiled)
    clock.infer({0: x})
    before = clock.totals()
    for _ in range(rounds):
        clock.infer({0: x})
    after = clock.totals()
    return sum(ms for node, ms in mean_ms(before, after, rounds).items() if is_lever_node(node, after[node][1]))


def interleaved(tasks: dict[str, Callable[[], object]], rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds of each task in each round, after one warm-up round; the order is shuffled every round, so
    that load from other processes falls on every task alike."""
    for task in tasks.values():
        task()
    order = list(tasks)
    times: dict[str, list[float]] = {name: [] for name in tasks}
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            tasks[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--out", type=Path, help="keep the variants' ONNX files here (default: a temporary folder)")
    args = parser.parse_args()

    deployed = load_checkpoint(args.ckpt).eval()
    models = variants(deployed)
    reference = concat_c1(deployed)
    baseline = next(iter(models))
    core = ov.Core()
    print(f"CPU: {cpu_name()} ({core.get_property('CPU', 'FULL_DEVICE_NAME')}); OpenVINO {ov.get_version()}")
    print(f"FP32, LATENCY hint, 2 threads; {args.rounds} rounds\n")
    print(f"| tile | graph | median ms | vs {baseline} | lever nodes ms | max abs diff vs PyTorch |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.out or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {name: folder / f"{name}.onnx" for name in models}
        for name, model in models.items():
            onnx.save(export_fp32(model)[0], str(paths[name]))
        compiled = {name: core.compile_model(str(path), "CPU", CONFIG) for name, path in paths.items()}
        for size in args.sizes:
            x = tile(size)
            with torch.no_grad():
                expected = reference(torch.from_numpy(x)).numpy()
            tasks = {name: runner(c.create_infer_request(), x) for name, c in compiled.items()}
            errors = {name: float(np.abs(task() - expected).max()) for name, task in tasks.items()}
            times = interleaved(tasks, args.rounds)
            profiled = {name: core.compile_model(str(path), "CPU", {**CONFIG, "PERF_COUNT": True}) for name, path in paths.items()}
            levers = {name: lever_ms(c, x, args.rounds) for name, c in profiled.items()}
            for name in models:
                ratio = statistics.median(t / b for t, b in zip(times[name], times[baseline]))
                print(
                    f"| {size}x{size} | {name} | {statistics.median(times[name]) * 1e3:.1f} | {ratio:.3f}"
                    f" | {levers[name]:.1f} | {errors[name]:.1e} |"
                )

if __name__ == "__main__":
    main()
