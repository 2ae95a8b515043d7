"""Folder throughput three ways on this machine: one process sequential, one process pipelined, and Ray Data
(`--cluster ray`) with 1 and 2 CPU inference actors. Each job is timed whole, model loading included (what
a user waits for); the local Ray is started once, outside the timings. Round-robin, median of the rounds.

    python -m bench.cluster --engines-dir engines --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
from skimage import data

from runtime.app import upscale_files
from runtime.cluster import run_cluster
from runtime.settings import Settings

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def make_photos(folder: Path, count: int) -> None:
    """`count` crops of 128x96 from scikit-image's photos (colour), as PNG."""
    for i in range(count):
        photo = getattr(data, PHOTOS[i % len(PHOTOS)])()
        y, x = 40 * (i // len(PHOTOS)), 60 * (i // len(PHOTOS))
        cv2.imwrite(str(folder / f"p{i:02d}.png"), photo[y : y + 96, x : x + 128, ::-1])


def timed(job: Callable[[Path], int], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        status = job(out)
    elapsed = time.perf_counter() - start
    assert status == 0, f"job failed ({status})"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    folder = work / "in"
    folder.mkdir()
    make_photos(folder, args.images)
    settings = Settings(engines_dir=args.engines_dir, quiet=True)

    def local(pipelined: bool) -> Callable[[Path], int]:
        def job(out: Path) -> int:
            return upscale_files(str(folder), out, settings, pipelined=pipelined)

        return job

    def cluster(actors: int) -> Callable[[Path], int]:
        return lambda out: run_cluster(str(folder), str(out), settings, actors=actors)

    start = time.perf_counter()
    # 4 logical CPUs on 2 cores: with 2, two CPU actors would hold both and starve the decode and commit tasks.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    startup = time.perf_counter() - start
    jobs = {
        "one process, sequential": local(False),
        "one process, pipelined (upscale.py FOLDER)": local(True),
        "Ray Data, 1 CPU actor": cluster(1),
        "Ray Data, 2 CPU actors": cluster(2),
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.rounds):
        for name, job in jobs.items():
            times[name].append(timed(job, work / "out"))
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["one process, sequential"])
    print(f"{args.images} photos of 128x96 -> 512x384 PNG, {args.rounds} round-robin rounds, medians; local Ray start-up {startup:.1f} s (not counted)\n")
    print("| run | s per job (model load included) | images/s | vs sequential |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {args.images / median:.1f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
