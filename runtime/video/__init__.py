"""Video in and out through PyAV (the [video] extra). Importing this package loads nothing: `load()` imports
PyAV when a video is actually asked for, and says how to install it where it is missing."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from core.errors import VideoError


def load(source: str | Path) -> ModuleType:
    """runtime.video.upscale (upscale_video, is_result, CONTAINERS: what it writes), imported now; VideoError
    naming `source` and the install command without PyAV."""
    try:
        from runtime.video import upscale
    except ImportError:
        raise VideoError(f"{source}: videos need PyAV: pip install -e '.[video]'") from None
    return upscale
