"""The command-line vocabulary both commands share: backend names, state_dict keys, bounded integers."""

from __future__ import annotations

import argparse
from collections.abc import Callable

BACKENDS = ("auto", "tensorrt-rtx", "tensorrt", "onnxruntime", "openvino", "torch")
KEYS = ("params_ema", "params")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`, a usage error (exit 2) otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse
