"""Choose tile size and overlap by measurement: tiled vs whole-image output on real photos.

    python -m bench.tiling_quality --onnx engines/lsanet_x4_fp32.onnx [--set5 ../shared/data/Set5]

LSANet's attention (stride-2 conv, 7x7/3 max-pool, bilinear upsampling of the pooled map) lets every output
pixel see far beyond a 3x3 neighbourhood, so tile results depend on tile geometry. Two tables:
  1. Large inputs (scikit-image photos at native size used as LR input, 400x600 to 1411x1411): PSNR of
     tiled against whole-image output, the worst error on the cut lines (where a seam would show) against
     elsewhere, and the time of tiled against whole-image runs. Two reference rows give the scale: the
     whole-image output when the input moves by up to half a grey level, and the FP16 graph's output.
  2. With ground truth (Set5 and scikit-image photos downscaled with MATLAB bicubic): Y-PSNR loss of tiled
     against whole-image output, on tiles small enough to cut these small LR images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from core.artifacts import onnx_file
from core.boundary import from_model, to_model
from core.metrics import psnr, y_psnr
from runtime.backends.onnxruntime import ORTBackend
from runtime.backends.openvino import OpenVINOBackend
from runtime.tiling import TileConfig, plan, upscale

WHOLE = TileConfig(tile=10**6)
LARGE = ("hubble_deep_field", "retina", "rocket", "coffee")


def seam_ratio(tiled: np.ndarray, whole: np.ndarray, config: TileConfig) -> tuple[float, float]:
    """(max error on the cut lines, max error elsewhere), in grey levels."""
    h, w = whole.shape[0] // 4, whole.shape[1] // 4
    tiles = plan(h, w, config).tiles
    err = np.abs(tiled.astype(np.int32) - whole.astype(np.int32)).max(axis=2)
    on_cut = np.zeros(err.shape, bool)
    for t in tiles:
        for cut in (t.y.keep_from, t.y.keep_to):
            if 0 < cut < h:
                on_cut[max(cut * 4 - 2, 0) : cut * 4 + 2] = True
        for cut in (t.x.keep_from, t.x.keep_to):
            if 0 < cut < w:
                on_cut[:, max(cut * 4 - 2, 0) : cut * 4 + 2] = True
    return float(err[on_cut].max()) if on_cut.any() else 0.0, float(err[~on_cut].max())


def gt_pairs(set5: Path | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    import torch
    from bicubic_pytorch import core

    pairs = []
    if set5 is not None:
        for lr in sorted(set5.glob("*_LR.png")):
            hr = lr.with_name(lr.name.replace("_LR", "_HR"))
            pairs.append((lr.name[:7], cv2.imread(str(lr))[..., ::-1].copy(), cv2.imread(str(hr))[..., ::-1].copy()))
    for name in ("astronaut", "coffee", "chelsea"):
        hr = getattr(data, name)()
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        x = torch.from_numpy(hr.astype(np.float32)).permute(2, 0, 1)[None]
        lr = core.imresize(x, scale=0.25)[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        pairs.append((name, lr, hr))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("engines/lsanet_x4_fp32.onnx"))
    parser.add_argument("--set5", type=Path)
    args = parser.parse_args()
    backend = OpenVINOBackend(args.onnx)
    backend.activate()
    run = backend.infer_pixels

    print("| tile | overlap | PSNR tiled vs whole, worst / median (dB) | worst error on cut lines / elsewhere (levels) | time vs whole |")
    print("|---|---|---|---|---|")
    large = {name: getattr(data, name)() for name in LARGE}
    wholes, whole_time = {}, 0.0
    for name, img in large.items():
        start = time.perf_counter()
        wholes[name] = upscale(img, run, WHOLE)
        whole_time += time.perf_counter() - start
    rng = np.random.default_rng(0)

    def perturbed(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = to_model(tiles)
        noise = rng.uniform(-0.5 / 255, 0.5 / 255, batch.shape).astype(np.float32)
        return from_model(backend.infer(np.clip(batch + noise, 0, 1)), tiles.dtype)

    fp16 = ORTBackend(args.onnx.with_name(onnx_file("fp16")), "fp16", "cpu")
    fp16.activate()
    for label, other in (("input +-0.5 grey (whole)", perturbed), ("FP16 graph (whole)", fp16.infer_pixels)):
        scores = [psnr(upscale(img, other, WHOLE), wholes[name], 255.0) for name, img in large.items()]
        print(f"| reference: {label} | - | {min(scores):.1f} / {np.median(scores):.1f} | - | - |")
    for tile in (256, 384, 512, 640):
        for overlap in (8, 16, 32, 48):
            config = TileConfig(tile=tile, overlap=overlap)
            scores, seams, spent = [], (0.0, 0.0), 0.0
            for name, img in large.items():
                start = time.perf_counter()
                tiled = upscale(img, run, config)
                spent += time.perf_counter() - start
                scores.append(psnr(tiled, wholes[name], 255.0))
                cut, rest = seam_ratio(tiled, wholes[name], config)
                seams = (max(seams[0], cut), max(seams[1], rest))
            print(
                f"| {tile} | {overlap} | {min(scores):.1f} / {np.median(scores):.1f} | {seams[0]:.0f} / {seams[1]:.0f} |"
                f" {spent / whole_time:.2f} |"
            )

    print("\n| tile | overlap | worst Y-PSNR loss vs whole image (dB) | mean Y-PSNR whole / tiled (dB) |")
    print("|---|---|---|---|")
    pairs = gt_pairs(args.set5)
    base = {n: y_psnr(upscale(lr, run, WHOLE), hr) for n, lr, hr in pairs}
    for tile in (32, 48, 64, 96):
        for overlap in (8, 16):
            if tile <= 2 * overlap:
                continue
            config = TileConfig(tile=tile, overlap=overlap)
            tiled = {n: y_psnr(upscale(lr, run, config), hr) for n, lr, hr in pairs}
            loss = max(base[n] - tiled[n] for n in base)
            print(f"| {tile} | {overlap} | {loss:.3f} | {np.mean(list(base.values())):.3f} / {np.mean(list(tiled.values())):.3f} |")


if __name__ == "__main__":
    main()
