"""Peak host memory of one pass per LR pixel, per CPU backend: what runtime/memory.py plans `--tile 0` from.

Each (backend, side) runs in a fresh process: load the backend, run a 16x16 warm-up, note the peak (VmHWM),
run one side x side pass, and report the growth of the peak per LR pixel.

    python -m bench.pass_memory --engines-dir engines --ckpt ../shared/weights/team44_LSANet.pth
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, re, sys
import numpy as np
name, side, onnx, ckpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
from runtime.backends.openvino import OpenVINOBackend
from runtime.backends.onnxruntime import ORTBackend
from runtime.backends.pytorch import TorchBackend
make = {"openvino": lambda: OpenVINOBackend(onnx), "onnxruntime": lambda: ORTBackend(onnx, "fp32", "cpu"),
        "torch": lambda: TorchBackend(ckpt, device="cpu")}[name]
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
backend = make()
backend.activate()
backend.infer(np.zeros((1, 3, 16, 16), np.float32))
base = peak()
backend.infer(np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32))
print(json.dumps({"per_pixel": (peak() - base) / side**2, "peak_mb": peak() / 2**20}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--ckpt", type=Path, required=True)
    args = parser.parse_args()
    onnx = str(args.engines_dir / "lsanet_x4_fp32.onnx")
    print("| backend | LR side | bytes per LR pixel | peak RSS MB |")
    print("|---|---|---|---|")
    for name in ("openvino", "onnxruntime", "torch"):
        for side in (256, 512):
            out = subprocess.run([sys.executable, "-c", PROBE, name, str(side), onnx, str(args.ckpt)],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            row = json.loads(out.strip().splitlines()[-1])
            print(f"| {name} | {side} | {row['per_pixel']:.0f} | {row['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
