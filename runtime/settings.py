"""One run's settings, shared by the command line, `Upscaler`, the folder runs, the cluster and video: what
model runs and how, and how results are named and written. Frozen, so a run cannot change under its
workers, and picklable, so a Ray actor gets the very same settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.vocabulary import BackendName, Precision
from runtime.images.io import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Settings:
    """Every field means what upscale.py's option of that name means (`upscale.py --help`)."""

    # The model: --ckpt, --onnx or --engine, else the manifest in `engines_dir` (None: the lookup order of
    # runtime/model/source.py engines_dirs()); `key` is the state_dict in a checkpoint.
    ckpt: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    engines_dir: Path | None = None
    key: str | None = None
    # How it runs: "auto" or a backend's name; None precision = the backend's default; tile None = the
    # default pass (512 x 512 LR pixels), 0 = as large as memory allows.
    backend: BackendName = "auto"
    precision: Precision | None = None
    tile: int | None = None
    overlap: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    # The outputs: `<name><suffix><ext>` (suffix None: `_x4`, or `_x<outscale>`); `overwrite` redoes earlier
    # results of this tool, and replaces nothing else.
    suffix: str | None = None
    ext: str | None = None
    # Results at this many times the input's size (the x4 result resized: runtime/images/outscale.py).
    outscale: float = 4.0
    # Image results in lossy formats: JPEG quality, and WebP quality (None: lossless WebP).
    jpeg_quality: int = 95
    webp_quality: int | None = None
    overwrite: bool = False
    # A folder INPUT: also the images of its sub-folders, their results in the same sub-folders of OUTPUT.
    recursive: bool = False
    # Video outputs (runtime/video/codecs.py): None = the defaults for the source and container.
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    quiet: bool = False

    @property
    def name_suffix(self) -> str:
        """What result names end with before their extension: `suffix`, else `_x<outscale>` (`_x4`)."""
        return self.suffix if self.suffix is not None else f"_x{self.outscale:g}"
