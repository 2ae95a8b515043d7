"""End to end, as a user meets it: `python upscale.py photo.png out.png` against the reference PyTorch eager
script on the same 1000x872 photo, alternating, whole processes (start-up, decoding, inference, PNG writing).

    python -m bench.e2e --ckpt ../shared/weights/team44_LSANet.pth [--rounds 3]

Needs `python export.py --ckpt ... --fp16` first (upscale.py takes its model from engines/manifest.json).
Prints each run's wall time and peak RSS (the child's ru_maxrss), then medians and the speed ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
from skimage import data

ROOT = Path(__file__).resolve().parent.parent


def measure(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {child.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "hubble.png"
        cv2.imwrite(str(photo), data.hubble_deep_field()[..., ::-1])
        ours = [sys.executable, "upscale.py", str(photo), str(Path(tmp) / "ours.png"), "--overwrite", "--quiet"]
        reference = [sys.executable, "bench/reference_eager.py", "--ckpt", args.ckpt, str(photo), str(Path(tmp) / "ref.png")]
        results: dict[str, list[tuple[float, float]]] = {"upscale.py": [], "reference eager": []}
        for round_ in range(args.rounds):
            for name, command in (("upscale.py", ours), ("reference eager", reference)):
                wall, rss = measure(command)
                results[name].append((wall, rss))
                print(f"round {round_ + 1} {name:<16} {wall:6.2f} s  {rss:6.0f} MB peak RSS")
    medians = {name: (statistics.median(w for w, _ in runs), max(r for _, r in runs)) for name, runs in results.items()}
    print("\n| command | median wall s | peak RSS MB |\n|---|---|---|")
    for name, (wall, rss) in medians.items():
        print(f"| {name} | {wall:.2f} | {rss:.0f} |")
    print(f"\nupscale.py is {medians['reference eager'][0] / medians['upscale.py'][0]:.2f}x faster, end to end")


if __name__ == "__main__":
    main()
