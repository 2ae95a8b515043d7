"""The reference way to upscale one image, as the challenge's test script does it: PyTorch eager, FP32,
the whole image in one pass. Used by bench/e2e.py as the baseline a user would otherwise run.

    python bench/reference_eager.py --ckpt ../shared/weights/team44_LSANet.pth in.png out.png
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from export.checkpoint import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args()
    model = load_checkpoint(args.ckpt)
    rgb = cv2.imread(args.input, cv2.IMREAD_COLOR)[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div(255).unsqueeze(0)
    with torch.no_grad():
        y = model(x).clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).numpy()
    cv2.imwrite(args.output, np.ascontiguousarray(y[..., ::-1]))


if __name__ == "__main__":
    main()
