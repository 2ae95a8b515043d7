"""Which parts of LSANet lose accuracy in FP16, and how well-conditioned is the network itself?

    python -m bench.fp16_sensitivity --ckpt ../shared/weights/team44_LSANet.pth

Part 1 keeps groups of nodes in FP32 (explicit Casts around them) and reports, per input, the max abs error
(in 1/255) and PSNR of the clamped FP16 output against FP32, both in ONNX Runtime. Part 2 measures, in
PyTorch, how far FP32 is from FP64 and how far FP32 moves when the input moves by up to half a grey level:
the network's own sensitivity, against which FP16's error on hard inputs is judged.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import onnxruntime as ort
import torch

from export.checkpoint import load_checkpoint
from export.fp16 import to_fp16
from export.hard_inputs import hard_inputs
from export.onnx_export import INPUT_NAME, export_fp32
from export.parity import photo_inputs


def groups(names: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Candidate FP32 islands, by module and op type."""
    even_heavy = ("B2.c2_r", "B2.c4", "B2.c5", "B4.c2_r", "B4.c4", "B4.c5", "B6.c2_r", "B6.c4", "B6.c5")
    return {
        "none (whole graph FP16)": [],
        "head: fea_conv, B1": [n for n, _ in names if n.startswith(("fea_conv", "B1"))],
        "tail: c1, c2, upsampler": [n for n, _ in names if n.startswith(("c1", "c2", "upsampler"))],
        "ESA blocks": [n for n, _ in names if ".esa" in n],
        "RCB convs": [n for n, op in names if "rbr_reparam/Conv" in n and op == "Conv"],
        "even-block heavy convs": [n for n, op in names if op == "Conv" and n.startswith(even_heavy)],
        "GELU (Div, Erf, Mul)": [n for n, op in names if op in ("Div", "Erf", "Mul") and ".esa" not in n],
        "residual Adds": [n for n, op in names if op == "Add"],
        "Sigmoid": [n for n, op in names if op == "Sigmoid"],
        "every non-Conv op": [n for n, op in names if op != "Conv"],
    }


def part1(fp32, inputs: dict[str, np.ndarray]) -> None:
    def session(model):
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    reference = session(fp32)
    ref = {k: np.clip(reference.run(None, {INPUT_NAME: x})[0], 0, 1) for k, x in inputs.items()}
    names = [(n.name, n.op_type) for n in fp32.graph.node]
    print("| kept in FP32 | nodes | " + " | ".join(inputs) + " |")
    print("|---|---|" + "---|" * len(inputs))
    for label, keep in groups(names).items():
        sess = session(to_fp16(fp32, keep))
        cells = []
        for k, x in inputs.items():
            err = np.abs(np.clip(sess.run(None, {INPUT_NAME: x})[0], 0, 1) - ref[k])
            cells.append(f"{err.max() * 255:.2f} / {10 * np.log10(1 / max(float(np.mean(err**2)), 1e-20)):.1f}")
        print(f"| {label} | {len(keep)} | " + " | ".join(cells) + " |")


def part2(model, inputs: dict[str, np.ndarray]) -> None:
    f64 = copy.deepcopy(model).double()
    f16 = copy.deepcopy(model).half()

    def level(t: torch.Tensor) -> torch.Tensor:
        return t.clamp(0, 1).double() * 255

    print("\n| input | FP32 vs FP64 max | FP16 vs FP64 max (share > 2/255) | FP32 under +-0.5 grey input (share > 2/255) |")
    print("|---|---|---|---|")
    rng = torch.Generator().manual_seed(0)
    for k, x in inputs.items():
        t = torch.from_numpy(x)
        with torch.no_grad():
            o64 = level(f64(t.double()))
            o32 = level(model(t))
            o16 = level(f16(t.half()))
            noise = (torch.rand(t.shape, generator=rng) - 0.5) / 255
            op = level(model((t + noise).clamp(0, 1)))
        d16, dp = (o16 - o64).abs(), (op - o32).abs()
        print(
            f"| {k} | {(o32 - o64).abs().max():.2f} | {d16.max():.2f} ({(d16 > 2).double().mean():.4f}) |"
            f" {dp.max():.2f} ({(dp > 2).double().mean():.4f}) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    args = parser.parse_args()
    model = load_checkpoint(args.ckpt)
    fp32, _ = export_fp32(model)
    synthetic = hard_inputs(64)
    inputs = {k: synthetic[k] for k in ("uniform-noise", "binary-noise", "checkerboard", "white", "colour-bars")}
    inputs.update(photo_inputs())
    part1(fp32, inputs)
    part2(model, inputs)


if __name__ == "__main__":
    main()
