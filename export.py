"""Export LSANet: checkpoint -> fused network -> verified ONNX (FP32, FP16) -> TensorRT engines.

The command lives in export/command.py (also installed as `lsanet-export`); this script only runs it.
"""

import sys

from export.command import main

if __name__ == "__main__":
    sys.exit(main())
