"""LSANet x4 runtime: the library behind upscale.py.

    from runtime import Settings, Upscaler, DeployError

Everything a user touches is importable from here: `Upscaler` (the entry point), `Settings` (one run's
options), `Image` with `read_image`/`write_image`, `upscale_video`, `run_cluster`, the `BackendName` and
`Precision` types, and every error a user catches (all subclasses of `DeployError`). Names are imported on
first use, so `import runtime` stays light and needs no optional extra until a part of it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "Upscaler": "runtime.upscaler",
    "Settings": "runtime.settings",
    "Image": "runtime.images.io",
    "read_image": "runtime.images.io",
    "write_image": "runtime.images.io",
    "run_cluster": "runtime.cluster",
    "BackendName": "core.vocabulary",
    "Precision": "core.vocabulary",
    "DeployError": "core.errors",
    "BackendError": "core.errors",
    "ImageError": "core.errors",
    "JobError": "core.errors",
    "OutputError": "core.errors",
    "FetchError": "core.errors",
    "VideoError": "core.errors",
    "ClusterError": "core.errors",
}
__all__ = [
    "BackendError", "BackendName", "ClusterError", "DeployError", "FetchError", "Image", "ImageError", "JobError",
    "OutputError", "Precision", "Settings", "Upscaler", "VideoError", "read_image", "run_cluster", "upscale_video",
    "write_image",
]  # fmt: skip

if TYPE_CHECKING:
    from core.errors import (
        BackendError,
        ClusterError,
        DeployError,
        FetchError,
        ImageError,
        JobError,
        OutputError,
        VideoError,
    )
    from core.vocabulary import BackendName, Precision
    from runtime.cluster import run_cluster
    from runtime.images.io import Image, read_image, write_image
    from runtime.settings import Settings
    from runtime.upscaler import Upscaler
    from runtime.video.upscale import upscale_video


def __getattr__(name: str) -> object:
    if name == "upscale_video":  # PyAV is an extra: say how to install it instead of an ImportError
        from runtime.video import load

        return load("upscale_video").upscale_video
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
