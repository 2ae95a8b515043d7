"""Export LSANet: checkpoint -> fused network -> verified ONNX (FP32, FP16) -> TensorRT engines.

Only parses arguments and calls the library in export/.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="LSANet checkpoint (.pth, .pt or .safetensors)")
    parser.add_argument("--key", choices=["params_ema", "params"], help="state_dict to use (default: params_ema)")
    parser.add_argument("--summary", action="store_true", help="print parameters and MACs of both forms, then exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    args = parser.parse_args(argv)

    from export.checkpoint import load_checkpoint
    from export.errors import DeployError

    try:
        model = load_checkpoint(args.ckpt, args.key)
        if args.summary:
            from export.summary import report

            print(report(model))
            return 0
    except DeployError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
