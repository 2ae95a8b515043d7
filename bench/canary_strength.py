"""What the self-check catches: every convolution of the public model negated in turn, judged against the
stored reference and by the plausibility bound alone (core/canary.py's comment quotes these figures).

    python -m bench.canary_strength --ckpt ../shared/weights/team44_LSANet.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from core.canary import PLAUSIBLE_PSNR, canary_input, shrink
from core.metrics import psnr
from export.checkpoint import load_checkpoint
from export.fuse import fuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    args = parser.parse_args()
    x = canary_input()
    model = fuse(load_checkpoint(args.ckpt)).eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
        print(f"healthy model: output shrunk x1/4 is {psnr(np.clip(shrink(reference), 0, 1), x):.1f} dB from its input")
        print(f"all-grey output: {psnr(np.full_like(x, 0.5), x):.1f} dB")
        rows = []
        for name, weight in model.named_parameters():
            if not (name.endswith("weight") and weight.ndim == 4):
                continue
            weight.neg_()
            out = model(torch.from_numpy(x)).numpy()
            weight.neg_()
            rows.append((psnr(np.clip(shrink(out), 0, 1), x), float(np.abs(out - reference).max()), name))
    below = sum(r[0] < PLAUSIBLE_PSNR for r in rows)
    print(f"{len(rows)} convolutions negated one at a time:")
    print(f"  plausibility (< {PLAUSIBLE_PSNR} dB) catches {below}; shrunk PSNR from {min(r[0] for r in rows):.1f} to {max(r[0] for r in rows):.1f} dB")
    print(f"  against the reference: smallest max abs difference {min(r[1] for r in rows):.3f} ({min(r[1] for r in rows) * 255:.0f}/255)")


if __name__ == "__main__":
    main()
