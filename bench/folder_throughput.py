"""Folder throughput: sequential vs pipelined runs, the I/O ceiling, and PNG compression levels.

    python -m bench.folder_throughput [--engines-dir engines] [--rounds 3]

- A folder of 16 real photos (scikit-image's) of mixed sizes and kinds (colour, grey), upscaled to PNG by
  runtime/job.py's sequential run and runtime/pipelined.py's, with the real backend: images per second,
  round-robin medians.
- The I/O ceiling: the same two runs with an instant stand-in for the network (a nearest-neighbour x4 resize,
  benchmark only), on 1 core and on all cores (CPU affinity), which is what a fast GPU leaves.
- PNG compression levels 0-9 (OpenCV, IMWRITE_PNG_COMPRESSION) on the network's x4 results of those photos:
  size and encode time, against what runtime/imageio.py writes now (OpenCV's default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from runtime import Upscaler
from runtime.imageio import Image, read_image
from runtime.job import Options, run_job
from runtime.pipelined import run_pipelined

PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry", "cat",
    "coins", "moon", "page", "text", "brick", "grass", "gravel", "retina",
)  # fmt: skip
SIDES = (96, 128, 160, 192, 224, 256)  # long side of each photo, in turn


def make_folder(folder: Path) -> list[Path]:
    """The 16 photos, each scaled so that its long side is the next of SIDES, written as PNG."""
    paths = []
    for i, name in enumerate(PHOTOS):
        image = getattr(data, name)()
        scale = SIDES[i % len(SIDES)] / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        paths.append(folder / f"{i:02d}_{name}.png")
        cv2.imwrite(str(paths[-1]), image if image.ndim == 2 else image[..., 2::-1])
    return paths


def stand_in(image: Image, _source: Path) -> Image:
    """An instant 'network': nearest-neighbour x4 (the benchmark's I/O ceiling only)."""
    stretch = lambda a: None if a is None else cv2.resize(a, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    return Image(stretch(image.colour), stretch(image.alpha), image.icc, image.exif)


def timed_runs(sources: list[Path], runners: dict[str, Callable], rounds: int, work: Path) -> dict[str, float]:
    """Median seconds per folder for each runner, round-robin after a warm-up round; fresh output folders."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(rounds + 1):
        for name, runner in runners.items():
            out = work / f"out-{round_}-{len(times[name])}-{name.replace(' ', '_')}"
            start = time.perf_counter()
            outcome = runner(sources, Options(out))
            seconds = time.perf_counter() - start
            assert not outcome.failed, outcome.failed
            shutil.rmtree(out)
            if round_:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def png_levels(outputs: list[np.ndarray], repeats: int) -> None:
    print("| PNG level | MB (16 results) | encode s (16 results) | vs OpenCV default |\n|---|---|---|---|")
    settings = {"default (no parameter)": []} | {str(level): [cv2.IMWRITE_PNG_COMPRESSION, level] for level in range(10)}
    sizes, times = {}, {name: [] for name in settings}
    for _ in range(repeats):
        for name, params in settings.items():
            start = time.perf_counter()
            sizes[name] = sum(len(cv2.imencode(".png", o, params)[1]) for o in outputs)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["default (no parameter)"])
    for name in settings:
        median = statistics.median(times[name])
        print(f"| {name} | {sizes[name] / 1e6:.1f} | {median:.2f} | {sizes[name] / sizes['default (no parameter)']:.2f}x size, {median / base:.2f}x time |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp, Upscaler(engines_dir=args.engines_dir) as upscaler:
        work = Path(tmp)
        (work / "in").mkdir()
        sources = make_folder(work / "in")
        pixels = sum(read_image(p).colour.shape[0] * read_image(p).colour.shape[1] for p in sources)
        print(f"{len(sources)} photos, {pixels / 1e6:.2f} MP in all; backend {upscaler.backend}; {len(cores)} cores\n")
        network = lambda image, _source: upscaler.upscale_image(image)
        runners = {
            "sequential": lambda s, o: run_job(s, False, o, network),
            "pipelined": lambda s, o: run_pipelined(s, False, o, network),
        }
        times = timed_runs(sources, runners, args.rounds, work)
        print("| run (real backend) | s per folder | images/s | vs sequential |\n|---|---|---|---|")
        for name, seconds in times.items():
            print(f"| {name} | {seconds:.2f} | {len(sources) / seconds:.2f} | {times['sequential'] / seconds:.2f}x |")

        print("\n| run (instant stand-in network) | cores | s per folder | images/s | vs sequential, same cores |\n|---|---|---|---|---|")
        for allowed in ([cores[0]], cores):
            os.sched_setaffinity(0, allowed)  # threads started from here on inherit it
            ceiling = {
                "sequential": lambda s, o: run_job(s, False, o, stand_in),
                "pipelined": lambda s, o: run_pipelined(s, False, o, stand_in),
                "pipelined, 2 encoders": lambda s, o: run_pipelined(s, False, o, stand_in, encoders=2),
            }
            times = timed_runs(sources, ceiling, args.rounds, work)
            for name, seconds in times.items():
                print(f"| {name} | {len(allowed)} | {seconds:.2f} | {len(sources) / seconds:.1f} | {times['sequential'] / seconds:.2f}x |")
        os.sched_setaffinity(0, cores)

        print()
        results = [upscaler.upscale_image(read_image(p)).colour for p in sources]
        png_levels([r if r.ndim == 2 else np.ascontiguousarray(r[..., ::-1]) for r in results], args.rounds)


if __name__ == "__main__":
    main()
