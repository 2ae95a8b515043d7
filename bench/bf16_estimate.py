"""bf16 against FP32 on the parity gate's inputs: export/bf16.py's estimate (what the gate reports), the
whole network cast to torch.bfloat16, and OpenVINO's real bf16 where the CPU has bfloat16 arithmetic.

    python -m bench.bf16_estimate --ckpt ../shared/weights/team44_LSANet.pth [--rounds 3]

Per input: max abs (in 1/255, clamped outputs) and PSNR against the FP32 PyTorch output; then the median
seconds each takes for all the inputs. Chaotic inputs are left out: bf16 has no rule on them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from core.metrics import compare
from export.bf16 import bf16_estimate
from export.checkpoint import load_checkpoint
from export.fuse import fuse
from export.onnx_export import export_fp32
from export.parity import gate_inputs
from runtime.backends.openvino import OpenVINOBackend, cpu_has_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = load_checkpoint(args.ckpt, None).eval()
    inputs = {name: x for name, (kind, x) in gate_inputs().items() if kind != "chaotic"}
    cast = fuse(model).to(torch.bfloat16)  # the deployed form, every weight and operation in bfloat16
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "fp32 (reference)": lambda x: model(torch.from_numpy(x)).numpy(),
        "estimate (export/bf16.py)": lambda x, e=bf16_estimate(model): e(torch.from_numpy(x)).numpy(),
        "torch.bfloat16 cast": lambda x: cast(torch.from_numpy(x).to(torch.bfloat16)).float().numpy(),
    }
    has_bf16 = cpu_has_bf16()
    with tempfile.TemporaryDirectory() as tmp:
        backend = None
        if has_bf16:
            path = Path(tmp) / "fp32.onnx"
            onnx.save(export_fp32(model)[0], path)
            backend = OpenVINOBackend(path, precision="bf16", cache=False)
            backend.activate()
            runners["OpenVINO bf16"] = backend.infer
        outputs: dict[str, dict[str, np.ndarray]] = {name: {} for name in runners}
        times: dict[str, list[float]] = {name: [] for name in runners}
        with torch.no_grad():
            for _ in range(args.rounds):
                for name, run in runners.items():
                    start = time.perf_counter()
                    outputs[name] = {key: run(x) for key, x in inputs.items()}
                    times[name].append(time.perf_counter() - start)
        if backend is not None:
            backend.deactivate()
    reference = outputs.pop("fp32 (reference)")
    print("| input | " + " | ".join(outputs) + " |\n|---|" + "---|" * len(outputs))
    for key in inputs:
        cells = []
        for result in outputs.values():
            c = compare(np.clip(reference[key], 0, 1), np.clip(result[key], 0, 1))
            cells.append(f"{c.max_abs * 255:.2f}/255, {c.psnr:.1f} dB")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("\n| run | median s for all inputs |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    if not has_bf16:
        print("\nOpenVINO bf16: not measured, this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX)")


if __name__ == "__main__":
    main()
