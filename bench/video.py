"""Video throughput and memory: frames per second on a 320x180 clip, split into decode, inference and encode,
and the peak memory of a clip 10x longer than the test suite's against the suite's own length.

    python -m bench.video [--engines-dir engines] [--frames 24] [--codec h264] [--out /tmp/video_benchmarks.md]

The clips are a slow pan over scikit-image's astronaut photo (H.264, yuv420p, 25 fps), made here. Stage
figures are busy seconds in each stage's thread; they overlap, so the wall time is close to the slowest
stage's, and the last line says what the pipeline would do if inference took no time at all (the bound
a GPU backend meets: decode and encode, run beside each other, on this machine's CPU).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from skimage import data

from runtime import Upscaler
from runtime.video.upscale import VideoResult, upscale_video


def make_pan(path: Path, frames: int, width: int, height: int) -> Path:
    """A slow pan (one pixel a frame) over the astronaut photo, scaled so the clip's height fits."""
    photo = data.astronaut()[:, :, :3]
    step = max(1, photo.shape[0] // (2 * height))
    small = photo[::step, ::step]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            x = i % max(1, small.shape[1] - width)
            crop = np.ascontiguousarray(small[:height, x : x + width])
            if crop.shape[:2] != (height, width):
                crop = np.pad(
                    crop,
                    ((0, height - crop.shape[0]), (0, width - crop.shape[1]), (0, 0)),
                    mode="edge",
                )
            frame = av.VideoFrame.from_ndarray(crop, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=1
            )
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(upscaler: Upscaler, source: Path, codec: str | None) -> VideoResult:
    target = source.with_name(f"{source.stem}_x4.mp4")
    return upscale_video(
        source, target, upscaler, codec=codec, overwrite=True, progress=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument(
        "--ckpt", type=Path, help="use this checkpoint instead of the engines folder"
    )
    parser.add_argument("--backend", default="auto")
    parser.add_argument(
        "--frames", type=int, default=24, help="frames of the 320x180 clip (default 24)"
    )
    parser.add_argument(
        "--codec", help="encoder (default: upscale.py's default for .mp4)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "video_benchmarks.md"
    )
    args = parser.parse_args()

    lines = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Upscaler(backend=args.backend, ckpt=args.ckpt, engines_dir=args.engines_dir) as up,
    ):
        folder = Path(tmp)
        clip = make_pan(folder / "pan320.mp4", args.frames, 320, 180)
        result = run(up, clip, args.codec)
        seconds = result.seconds
        fps = {stage: result.frames / s for stage, s in seconds.items() if s > 0}
        bound = result.frames / max(seconds.get("decode", 0), seconds.get("encode", 0))
        lines += [
            (
                f"Video, 320x180 -> 1280x720, {result.frames} frames, backend {up.backend}, {result.encoder}, "
                f"{os.cpu_count()} CPU cores:"
            ),
            "",
            "| stage | busy s | fps alone |",
            "|---|---:|---:|",
            *(
                f"| {stage} | {s:.2f} | {fps[stage]:.1f} |"
                for stage, s in seconds.items()
            ),
            f"| **pipeline (wall)** | {result.wall_s:.2f} | **{result.frames / result.wall_s:.2f}** |",
            "",
            f"With inference free (a fast GPU), decode and encode here bound it at about {bound:.0f} fps.",
            "",
        ]
        short = make_pan(folder / "short.mp4", 24, 48, 32)
        long = make_pan(folder / "long.mp4", 240, 48, 32)
        run(up, short, args.codec)
        after_short = peak_rss_mb()
        run(up, long, args.codec)
        after_long = peak_rss_mb()
        lines += [
            (
                f"Memory, 48x32 clips: peak RSS {after_short:.0f} MB after 24 frames, {after_long:.0f} MB after 240 "
                f"(+{after_long - after_short:.0f} MB for 10x the length)."
            ),
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
