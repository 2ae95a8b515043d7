"""--outscale quality on Set5: the x4 result resized to S times the input by upscale.py (area filter when
S < 4, Lanczos-4 when S > 4; runtime/images/outscale.py), against resizing the same x4 result yourself
with other common filters, and against bicubic of the LR input; Y-PSNR (border 4 x S/4) against the HR
ground truth resized to the same size with the same MATLAB-exact bicubic that made the LR.

    python -m bench.outscale [--set5 ../shared/data/Set5] [--engines-dir engines]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from bicubic_pytorch import core
from PIL import Image as PILImage

from core.metrics import y_psnr
from runtime import Upscaler
from runtime.images.io import Image, scaled_size
from runtime.images.outscale import resize_result


def _read(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


def _matlab_resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """MATLAB-exact bicubic (antialiased when shrinking) to (width, height), uint8."""
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].double()
    y = core.imresize(x, sizes=(size[1], size[0]))
    return y[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set5", type=Path, default=Path("../shared/data/Set5"))
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    args = parser.parse_args()
    scales = (2.0, 3.0, 3.5, 6.0)
    others = {
        "x4, then PIL Lanczos": lambda x4, size: np.asarray(PILImage.fromarray(x4).resize(size, PILImage.LANCZOS)),
        "x4, then OpenCV bicubic": lambda x4, size: cv2.resize(x4, size, interpolation=cv2.INTER_CUBIC),
        "x4, then MATLAB bicubic": _matlab_resize,
    }
    rows: dict[str, dict[float, list[float]]] = {}
    with Upscaler(engines_dir=args.engines_dir) as up:
        backend = up.backend
        for lr_path in sorted(args.set5.glob("*_LR.png")):
            lr, hr = _read(lr_path), _read(lr_path.with_name(lr_path.name.replace("_LR", "_HR")))
            x4 = up.upscale_image(Image(lr)).colour
            for scale in scales:
                size = scaled_size(lr.shape[1], lr.shape[0], scale)
                truth = _matlab_resize(hr, size)
                border = round(4 * scale / 4)
                results = {"upscale.py --outscale": resize_result(Image(x4), lr.shape[1], lr.shape[0], scale).colour}
                results |= {name: make(x4, size) for name, make in others.items()}
                results["bicubic of the LR input (no network)"] = _matlab_resize(lr, size)
                for name, result in results.items():
                    rows.setdefault(name, {}).setdefault(scale, []).append(y_psnr(result, truth, border))
    print(f"Set5 Y-PSNR (dB, mean of 5) against the HR image resized to S x the LR size; backend {backend}\n")
    print("| result | " + " | ".join(f"S = {s:g}" for s in scales) + " |\n|---|" + "---|" * len(scales))
    for name, by_scale in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(by_scale[s]):.2f}" for s in scales) + " |")


if __name__ == "__main__":
    main()
