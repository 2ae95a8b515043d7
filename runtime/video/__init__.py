"""Video in and out through PyAV (the [video] extra). Importing this package loads nothing: `load()` imports
PyAV when a video is actually asked for, and says how to install it where it is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.errors import VideoError


def load(source: str | Path) -> tuple[Callable, dict]:
    """(runtime.video.upscale.upscale_video, the containers it writes); VideoError naming `source` and the
    install command without PyAV."""
    try:
        from runtime.video.codecs import CONTAINERS
        from runtime.video.upscale import upscale_video
    except ImportError:
        raise VideoError(f"{source}: videos need PyAV: pip install -e '.[video]'") from None
    return upscale_video, CONTAINERS
