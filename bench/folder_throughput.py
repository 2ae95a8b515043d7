"""Folder throughput: sequential vs pipelined runs, the I/O ceiling, and PNG writers and levels.

    python -m bench.folder_throughput [--engines-dir engines] [--rounds 3]

- A folder of 16 real photos (scikit-image's) of mixed sizes and kinds (colour, grey), upscaled to PNG by
  runtime/jobs/plan.py's sequential run and runtime/jobs/pipelined.py's, with the real backend: images per second,
  round-robin medians.
- The I/O ceiling: the same two runs with an instant stand-in for the network (a nearest-neighbour x4 resize,
  benchmark only), on 1 core and on all cores (CPU affinity), which is what a fast GPU leaves.
- PNG writers on the network's x4 results of those photos and of one large photo, size and encode time:
  runtime/images/png.py (what runtime/images/io.py writes) on one thread and on all cores, and on Python's own zlib
  instead of zlib-ng, against OpenCV's default PNG (what it wrote before) and OpenCV's compression levels
  0-9 (IMWRITE_PNG_COMPRESSION); every file is checked to decode exactly.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from runtime import Upscaler
from runtime.cores import usable_cores
from runtime.images import png
from runtime.images.io import Image, read_image
from runtime.jobs.pipelined import run_pipelined
from runtime.jobs.plan import plan_outputs
from runtime.jobs.step import run_sequential
from runtime.settings import Settings

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
            out.mkdir()
            outcome = runner(list(zip(sources, plan_outputs(sources, False, out, Settings()))))
            seconds = time.perf_counter() - start
            assert not outcome.failed, outcome.failed
            shutil.rmtree(out)
            if round_:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def png_writers(results: list[np.ndarray], repeats: int, levels: bool) -> None:
    """Size and median encode time of each writer for all `results` (RGB or grey), round-robin; OpenCV's
    levels 0-9 too when `levels`. runtime/images/png.py also runs on Python's own zlib, for comparison."""
    cores = usable_cores()  # what runtime/images/png.py uses by default
    bgr = [r if r.ndim == 2 else np.ascontiguousarray(r[..., ::-1]) for r in results]

    def ours(threads: int, deflate: object | None = None) -> Callable[[], list[bytes]]:
        def encode() -> list[bytes]:
            files, saved = [], png.zlib
            png.zlib = deflate or saved
            try:
                for result in results:
                    stream = io.BytesIO()
                    png.write_png(stream, result, threads=threads)
                    files.append(stream.getvalue())
            finally:
                png.zlib = saved
            return files

        return encode

    opencv = lambda params: lambda: [cv2.imencode(".png", image, params)[1].tobytes() for image in bgr]
    writers = {"OpenCV default (no parameter; what was written before)": opencv([])}
    writers |= {"runtime/images/png.py, 1 thread": ours(1), f"runtime/images/png.py, {cores} threads": ours(cores)}
    writers |= {"runtime/images/png.py on Python's zlib, 1 thread": ours(1, zlib)}
    if levels:
        writers |= {f"OpenCV level {level}": opencv([cv2.IMWRITE_PNG_COMPRESSION, level]) for level in range(10)}
    sizes, times = {}, {name: [] for name in writers}
    for _ in range(repeats):
        for name, encode in writers.items():
            start = time.perf_counter()
            files = encode()
            times[name].append(time.perf_counter() - start)
            sizes[name] = sum(map(len, files))
            for file, result in zip(files, bgr):
                assert np.array_equal(cv2.imdecode(np.frombuffer(file, np.uint8), cv2.IMREAD_UNCHANGED), result)
    base_name = next(iter(writers))
    base = statistics.median(times[base_name])
    print("| PNG writer | MB | encode s | vs OpenCV default |\n|---|---|---|---|")
    for name in writers:
        median = statistics.median(times[name])
        ratio = f"{sizes[name] / sizes[base_name]:.2f}x size, {median / base:.2f}x time"
        print(f"| {name} | {sizes[name] / 1e6:.1f} | {median:.2f} | {ratio} |")


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
        limit = Settings().max_pixels
        runners = {
            "sequential": lambda pairs: run_sequential(pairs, network, False, limit),
            "pipelined": lambda pairs: run_pipelined(pairs, network, False, limit, encoders=1),
            "pipelined, 2 encoders": lambda pairs: run_pipelined(pairs, network, False, limit, encoders=2),
        }
        times = timed_runs(sources, runners, args.rounds, work)
        print("| run (real backend) | s per folder | images/s | vs sequential |\n|---|---|---|---|")
        for name, seconds in times.items():
            print(f"| {name} | {seconds:.2f} | {len(sources) / seconds:.2f} | {times['sequential'] / seconds:.2f}x |")

        print("\n| run (instant stand-in network) | cores | s per folder | images/s | vs sequential, same cores |\n|---|---|---|---|---|")
        for allowed in ([cores[0]], cores):
            os.sched_setaffinity(0, allowed)  # threads started from here on inherit it
            ceiling = {
                "sequential": lambda pairs: run_sequential(pairs, stand_in, False, limit),
                "pipelined": lambda pairs: run_pipelined(pairs, stand_in, False, limit, encoders=1),
                "pipelined, 2 encoders": lambda pairs: run_pipelined(pairs, stand_in, False, limit, encoders=2),
            }
            times = timed_runs(sources, ceiling, args.rounds, work)
            for name, seconds in times.items():
                print(f"| {name} | {len(allowed)} | {seconds:.2f} | {len(sources) / seconds:.1f} | {times['sequential'] / seconds:.2f}x |")
        os.sched_setaffinity(0, cores)

        print()
        print(f"The network's x4 results of the {len(sources)} photos:")
        png_writers([upscaler.upscale_image(read_image(p)).colour for p in sources], args.rounds, levels=True)
        large = data.hubble_deep_field()
        print(f"\nThe network's x4 result of hubble_deep_field ({large.shape[1]}x{large.shape[0]} in):")
        png_writers([upscaler.upscale_image(Image(large)).colour], args.rounds, levels=False)


if __name__ == "__main__":
    main()
