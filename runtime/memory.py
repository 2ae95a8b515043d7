"""How much memory this process may still use, and what an image's upscale needs: checked before work so
that a too-large image is a clear error and `--tile 0` starts from a pass that fits, not from trial and error."""

from __future__ import annotations

import math
import os
from pathlib import Path

from core.descriptor import SCALE
from core.errors import ImageError
from runtime.cgroup import memory_room

# Peak host memory of one pass per LR pixel, measured for OpenVINO, ONNX Runtime and PyTorch on the CPU
# at 256x256 and 512x512 (2.8-3.3 KB: activations, input and the float32 x4 output; `python -m
# bench.pass_memory`, BENCHMARKS.md "Memory of one pass"); rounded up.
PASS_BYTES_PER_PIXEL = 4096
# A pass may use this share of the memory available when it is planned; the rest is for the image itself,
# its output and the rest of the system.
PASS_SHARE = 0.5


def available_bytes() -> int | None:
    """Memory that can be allocated without swapping (Linux MemAvailable, within the cgroup's limit: v1 or v2), or None
    where the system does not say."""
    room = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            room = None
    cgroup = memory_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    return room


def whole_image_side(available: int | None = None) -> int:
    """The side of the largest square pass that fits the memory available now (for --tile 0)."""
    available = available_bytes() if available is None else available
    if available is None:
        return 2048
    return max(64, math.isqrt(int(available * PASS_SHARE) // PASS_BYTES_PER_PIXEL))


def gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"


def check_fits(height: int, width: int, planes: int, itemsize: int, name: str | Path, scale: float = SCALE) -> None:
    """ImageError, before any work, when the result `scale` times an image of this size (`planes` samples
    of `itemsize` bytes per pixel) alone would not fit in the memory available now."""
    out_height, out_width = round(height * scale), round(width * scale)
    needed = out_height * out_width * max(planes, 3) * itemsize
    room = available_bytes()
    if room is not None and needed > room:
        raise ImageError(
            f"{name}: its x{scale:g} result ({out_width}x{out_height}, {gib(needed)}) needs more memory than the {gib(room)} available"
        )
