"""The command-line vocabulary both commands share: backend names, state_dict keys, bounded integers."""

from __future__ import annotations

import argparse
from collections.abc import Callable

BACKENDS = ("auto", "tensorrt-rtx", "tensorrt", "onnxruntime", "openvino", "torch")
KEYS = ("params_ema", "params")
# Inputs upscale.py sends to the video path (runtime/video.py) instead of the image path.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv", ".wmv",
     ".ogv", ".3gp", ".y4m"}
)  # fmt: skip


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
