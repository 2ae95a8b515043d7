"""Export LSANet: checkpoint -> fused network -> verified ONNX (FP32, FP16) -> TensorRT engines.

The `export.py` command (and `lsanet-export`): only parses arguments and calls the library in export/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.vocabulary import KEYS, int_at_least


def build_parser() -> argparse.ArgumentParser:
    from core.artifacts import RTX_DEFAULT_TARGETS
    from core.tensorrt_common import rtx_targets
    from export.trt_build import Profile, parse_shape

    default = Profile()
    fmt = "x".join
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="LSANet checkpoint (.pth, .pt or .safetensors)")
    parser.add_argument("--key", choices=KEYS, help="state_dict to use (default: params_ema)")
    parser.add_argument("--summary", action="store_true", help="print parameters and MACs of both forms, then exit")
    parser.add_argument("--fp16", action="store_true", help="build FP16 engines (from the FP16 ONNX); default FP32")
    parser.add_argument("--out", type=Path, default=Path("engines"), help="output folder (default: engines/)")
    parser.add_argument(
        "--flavor",
        choices=["auto", "rtx", "tensorrt", "none"],
        default="auto",
        help="engines to build: auto = every flavour that can build here (TensorRT-RTX anywhere, "
        "standard TensorRT on a GPU); none = ONNX only",
    )
    for name, value in (("min", default.min), ("opt", default.opt), ("max", default.max)):
        parser.add_argument(
            f"--{name}-shape",
            type=parse_shape,
            default=value,
            metavar="NxHxW",
            help=f"optimisation profile {name} (batch x LR height x LR width; default {fmt(map(str, value))})",
        )
    parser.add_argument(
        "--compute-capability",
        action="append",
        choices=rtx_targets() or None,
        help=f"TensorRT-RTX target (repeatable; default: {', '.join(RTX_DEFAULT_TARGETS)}). Add SM75 for Turing, SM80 for"
        " A100; TensorRT-RTX has no SM90/SM100 (on those GPUs use --flavor tensorrt)",
    )
    parser.add_argument("--hardware-compatible", action="store_true", help="standard TensorRT: one plan for Ampere+")
    parser.add_argument("--workspace-mib", type=int_at_least(1), help="builder workspace limit (default: TensorRT's)")
    parser.add_argument("--parity-image", type=Path, action="append", default=[], help="extra real photo for the gate")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Everything, parsing included, runs inside the wrapper: Ctrl-C at any moment is a clean exit."""
    from core.command import run_command

    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    return run_command(lambda: run(build_parser().parse_args(argv)), debug, "the output folder was left as it was")


def _exporter_installed() -> None:
    """DeployError naming the extra when the exporter's packages are missing (a runtime-only install)."""
    from core.errors import DeployError
    from core.extras import EXPORTER, missing

    if absent := missing(EXPORTER):
        raise DeployError(f"export.py needs the exporter's packages ({', '.join(absent)} missing): pip install -e '.[export]'")


def run(args: argparse.Namespace) -> int:
    _exporter_installed()
    if args.summary:
        from export.checkpoint import load_checkpoint
        from export.summary import report

        print(report(load_checkpoint(args.ckpt, args.key)))
        return 0
    from export.pipeline import ExportConfig, run_export
    from export.trt_build import BuildOptions, Profile

    config = ExportConfig(
        ckpt=args.ckpt,
        out_dir=args.out,
        key=args.key,
        fp16=args.fp16,
        flavor=args.flavor,
        profile=Profile(args.min_shape, args.opt_shape, args.max_shape),
        options=BuildOptions(
            workspace_mib=args.workspace_mib,
            compute_capabilities=tuple(args.compute_capability or ()),
            hardware_compatible=args.hardware_compatible,
        ),
        parity_images=args.parity_image,
    )
    print("\n".join(run_export(config).lines))
    return 0

