"""Peak memory of `python upscale.py` on a 2048x2048 LR input (8192x8192 output), against the output's size.

    python -m bench.memory [--size 2048] [upscale.py options, e.g. --backend onnxruntime]

The input is scikit-image's retina photo resized to size x size. Needs `python export.py ... --fp16` first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
from skimage import data

from bench.e2e import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "large.png"
        cv2.imwrite(str(photo), cv2.resize(data.retina(), (args.size, args.size), interpolation=cv2.INTER_CUBIC)[..., ::-1])
        wall, rss = measure([sys.executable, "upscale.py", str(photo), str(Path(tmp) / "out.png"), "--quiet", *extra])
    output_mb = (args.size * 4) ** 2 * 3 / 2**20
    print(f"{args.size}x{args.size} LR -> {args.size * 4}x{args.size * 4}: {wall:.1f} s, peak RSS {rss:.0f} MB; "
          f"the 8-bit RGB output alone is {output_mb:.0f} MB (peak = {rss / output_mb:.1f}x the output)")  # fmt: skip


if __name__ == "__main__":
    main()
