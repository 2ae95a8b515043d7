"""The vocabulary both commands and the library share: backend names and precisions (as types and as
tuples for argparse), state_dict keys, what counts as a video, bounded integers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Literal, get_args

BackendName = Literal["auto", "tensorrt-rtx", "tensorrt", "onnxruntime", "openvino", "torch"]
Precision = Literal["fp32", "fp16", "bf16"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
PRECISIONS: tuple[str, ...] = get_args(Precision)
KEYS = ("params_ema", "params")
# Inputs upscale.py sends to the video path (runtime/video/upscale.py) instead of the image path.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv", ".wmv",
     ".ogv", ".3gp", ".y4m"}
)  # fmt: skip


# What runtime/video/codecs.py writes (its CODECS and CONTAINERS, in order), named here so that --help can
# list them without importing PyAV.
VIDEO_CODECS = ("h264", "hevc", "av1", "vp9", "ffv1", "prores")
VIDEO_CONTAINERS = (".mp4", ".mov", ".mkv", ".webm")


def package_version() -> str:
    """This package's installed version, or "source" when it runs from a checkout that is not installed."""
    from importlib import metadata

    try:
        return metadata.version("lsanet-deploy")
    except metadata.PackageNotFoundError:
        return "source"


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
