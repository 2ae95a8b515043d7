"""Upscale images x4 with LSANet: a file, a folder or a glob, through the fastest backend available.

The `upscale.py` command (and `lsanet-upscale`): only parses arguments and calls the library in runtime/.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from export.cli import BACKENDS, KEYS, VIDEO_SUFFIXES, int_at_least


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="an image, a folder of images, a glob such as 'photos/*.jpg', or a video "
                                      "(a name starting with '-' goes after --)")  # fmt: skip
    parser.add_argument("output", nargs="?", type=Path,
                        help="output file (one input) or folder; default: beside each input, with --suffix")  # fmt: skip
    parser.add_argument("--suffix", default="_x4", help="added to output names (default: _x4)")
    parser.add_argument("--ext", help="output format, e.g. png (default: the input's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace earlier results (an image exactly 4x its input's size); never an input or other files")  # fmt: skip
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="default: the fastest that can run here")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 graph/engine")
    precision.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="FP32 graph/engine")
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                           help="bfloat16 on CPUs that have it (OpenVINO): faster, less exact (BENCHMARKS.md)")  # fmt: skip
    parser.add_argument("--tile", type=int_at_least(0),
                        help="pixel budget of one pass: at most N x N LR pixels (default 512; 0 = as large as memory allows)")  # fmt: skip
    parser.add_argument("--max-pixels", type=int_at_least(1), default=None, metavar="N",
                        help="refuse inputs of more than N pixels (default: runtime/imageio.py DEFAULT_MAX_PIXELS)")  # fmt: skip
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
    try:
        from runtime.video import add_video_arguments
    except ImportError:  # without the [video] extra, a video input says how to get it
        return parser
    add_video_arguments(parser)
    return parser


def run(argv: list[str] | None) -> int:
    """Parse, then hand the request to the library (runtime/app.py)."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"

    from runtime.app import (
        Request,
        upscale_files,
        upscale_on_cluster,
        upscale_video_file,
    )
    from runtime.job import Options

    request = Request(
        inputs=args.input,
        options=Options(args.output, args.suffix, args.ext, args.overwrite),
        backend=args.backend,
        precision=args.precision,
        tile=args.tile,
        overlap=args.overlap,
        ckpt=args.ckpt,
        onnx=args.onnx,
        engine=args.engine,
        engines_dir=args.engines_dir,
        key=args.key,
        quiet=args.quiet,
        **({"max_pixels": args.max_pixels} if args.max_pixels else {}),
    )
    if args.cluster == "ray":
        return upscale_on_cluster(request, args.ray_address)
    if Path(args.input).suffix.lower() in VIDEO_SUFFIXES:
        request.video = {"codec": args.codec, "crf": args.crf, "preset": args.preset} if "codec" in args else {}
        return upscale_video_file(request)
    return upscale_files(request)


def main(argv: list[str] | None = None) -> int:
    """Everything, parsing included, runs inside the wrapper: Ctrl-C at any moment is a clean exit."""
    from export.errors import run_command

    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    return run_command(lambda: run(argv), debug, "no partial file was left")

