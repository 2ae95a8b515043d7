"""Upscale images x4 with LSANet: a file, a folder or a glob, through the fastest backend available.

The `upscale.py` command (and `lsanet-upscale`): only parses arguments and calls the library in runtime/.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from core.vocabulary import (
    BACKENDS,
    KEYS,
    VIDEO_CODECS,
    VIDEO_CONTAINERS,
    VIDEO_SUFFIXES,
    int_at_least,
    package_version,
)


def quality(text: str) -> int:
    """An argparse type: an image quality from 1 to 100 (a usage error, exit 2, otherwise)."""
    value = int_at_least(1)(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be at most 100, got {value}")
    return value


def outscale(text: str) -> float:
    """An argparse type: a scale runtime/images/outscale.py accepts (a usage error, exit 2, otherwise)."""
    from runtime.images.outscale import check_outscale

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    try:
        check_outscale(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    from runtime.settings import Settings

    default = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("input", help="an image, a folder of images, a glob such as 'photos/*.jpg', or a video "
                                      "(a name starting with '-' goes after --)")  # fmt: skip
    # A string, not a Path: Path would drop a trailing '/' (a folder for one input) and turn s3://b into s3:/b.
    parser.add_argument("output", nargs="?",
                        help="output file (one input) or folder; default: beside each input, with --suffix")  # fmt: skip
    parser.add_argument("--suffix", help="added to output names (default: _x4, or _x<S> with --outscale S)")
    parser.add_argument("-s", "--outscale", type=outscale, default=4.0, metavar="S",
                        help="results at S times the input's size (default 4): the x4 result resized, with an area "
                             "filter when S < 4 and Lanczos when S > 4; 0 < S <= 16")  # fmt: skip
    parser.add_argument("--ext", help="output format, e.g. png (default: the input's)")
    parser.add_argument("--jpeg-quality", type=quality, default=default.jpeg_quality, metavar="Q",
                        help=f"JPEG results' quality, 1-100 (default {default.jpeg_quality})")  # fmt: skip
    parser.add_argument("--webp-quality", type=quality, metavar="Q",
                        help="WebP results: lossy at quality Q, 1-100 (default: lossless)")  # fmt: skip
    parser.add_argument("--recursive", action="store_true",
                        help="a folder INPUT: also the images in its sub-folders, their results in the same sub-folders "
                             "of OUTPUT (default: sub-folders are listed as skipped)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="replace earlier results (an image exactly 4x its input's size); never an input or other files")  # fmt: skip
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="default: the fastest that can run here")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 graph/engine")
    precision.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="FP32 graph/engine")
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                           help="bfloat16 on CPUs that have it (OpenVINO): faster, less exact (BENCHMARKS.md)")  # fmt: skip
    parser.add_argument("--tile", type=int_at_least(0),
                        help="pixel budget of one pass: at most N x N LR pixels (default 512). 0 = no tiling: the whole "
                             "image in one pass where memory allows (else the largest pass that fits); it costs about "
                             "3.3 KB of memory per input pixel (2.7 GB for a 1000x872 photo, against 0.95 GB by default) "
                             "and is no faster on a CPU")  # fmt: skip
    parser.add_argument("--max-pixels", type=int_at_least(1), default=None, metavar="N",
                        help=f"refuse inputs of more than N pixels (default {default.max_pixels:,})")  # fmt: skip
    parser.add_argument("--overlap", type=int_at_least(0), help="LR pixels of context around each tile (default 16)")
    parser.add_argument("--ckpt", type=Path, help="use this checkpoint instead of engines/manifest.json")
    parser.add_argument("--onnx", type=Path, help="use this ONNX graph")
    parser.add_argument("--engine", type=Path, help="use this TensorRT engine (its .json sidecar beside it)")
    parser.add_argument("--engines-dir", type=Path,
                        help="where export.py wrote (default: $LSANET_ENGINES, ./engines, this project's engines/, "
                             "the user cache: the first holding a manifest)")  # fmt: skip
    parser.add_argument("--key", choices=KEYS, help="state_dict in --ckpt (default params_ema)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    parser.add_argument("--cluster", choices=["ray"],
                        help="run the job on a Ray cluster with Ray Data (pip install -e '.[cluster]'); needs OUTPUT")  # fmt: skip
    parser.add_argument("--ray-address", help="Ray cluster to connect to (default: $RAY_ADDRESS, else a local Ray)")
    video = parser.add_argument_group(
        "video", f"for video inputs ({', '.join(sorted(VIDEO_SUFFIXES))}); the output's extension "
        f"({', '.join(VIDEO_CONTAINERS)}) picks the container; other streams are copied unchanged",
    )  # fmt: skip
    video.add_argument("--codec", metavar="NAME",
                       help=f"video encoder: {', '.join(VIDEO_CODECS)} (default: h264 for 8-bit sources, hevc for 10-bit "
                            "or beyond H.264's size limits; in .webm vp9, or av1 for 10-bit; ffv1 is lossless, .mkv)")  # fmt: skip
    video.add_argument("--crf", "--quality", dest="crf", type=int, metavar="N",
                       help="constant quality, lower is better: h264 18, hevc 20 (0-51), av1 30 (1-63), vp9 24 (0-63) "
                            "by default")  # fmt: skip
    video.add_argument("--preset", metavar="NAME",
                       help="encoder speed: h264/hevc ultrafast..veryslow (default medium), av1 0-13 (default 8), "
                            "vp9 cpu-used 0-8 (default 4), prores profile proxy..4444xq (default hq)")  # fmt: skip
    return parser


def run(argv: list[str] | None) -> int:
    """Parse, then hand the run to the library (runtime/app.py)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not any(item.startswith("-") for item in extra):
        parser.error(f"{2 + len(extra)} paths given, but it takes INPUT and one OUTPUT: did the shell expand an unquoted "
                     f"glob? Quote it: upscale.py 'photos/*.jpg' out/")  # fmt: skip
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"

    from runtime.app import upscale_files, upscale_on_cluster, upscale_video_file
    from runtime.settings import Settings

    fields = ("ckpt", "onnx", "engine", "engines_dir", "key", "backend", "precision", "tile", "overlap",
              "suffix", "ext", "overwrite", "recursive", "outscale", "jpeg_quality", "webp_quality", "codec", "crf",
              "preset", "quiet")  # fmt: skip
    settings = Settings(**{name: getattr(args, name) for name in fields},
                        **({"max_pixels": args.max_pixels} if args.max_pixels else {}))  # fmt: skip
    if args.cluster == "ray":
        return upscale_on_cluster(args.input, args.output, settings, args.ray_address)
    if Path(args.input).suffix.lower() in VIDEO_SUFFIXES:
        return upscale_video_file(Path(args.input), None if args.output is None else Path(args.output), settings)
    return upscale_files(args.input, args.output, settings)


def main(argv: list[str] | None = None) -> int:
    """Everything, parsing included, runs inside the wrapper: Ctrl-C at any moment is a clean exit."""
    from core.command import run_command

    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    return run_command(lambda: run(argv), debug, "no partial file was left")

