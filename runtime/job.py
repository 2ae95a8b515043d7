"""Upscale files: resolve inputs and outputs, upscale each image (colour, greyscale, alpha), write safely.

Greyscale images run as R = G = B and come back as the mean of the three output channels. Alpha is
upscaled separately by the same network, as a grey image, so hard cut-out edges stay as sharp as the
colour ones. Inputs are never written to; an existing output is replaced only with `overwrite`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.errors import DeployError
from runtime.imageio import READABLE, Image, ImageError, read_image, write_image
from runtime.tiling import Run, TileConfig, count_tiles, upscale


class JobError(DeployError):
    """A problem with the command's inputs or outputs as a whole (not with one image)."""


@dataclass
class Options:
    output: Path | None = None
    suffix: str = "_x4"
    ext: str | None = None
    overwrite: bool = False


@dataclass
class Outcome:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _as_rgb(plane: np.ndarray) -> np.ndarray:
    return np.repeat(plane[..., None], 3, axis=2)


def _as_grey(rgb: np.ndarray) -> np.ndarray:
    # The mean of three integers, rounded: computed in a wider type so uint16 cannot overflow.
    return ((rgb.astype(np.uint32).sum(axis=2) + 1) // 3).astype(rgb.dtype)


def upscale_image(
    image: Image, run: Run, config: TileConfig, rerun_fp32: Run | None = None, progress: Callable[[int], None] | None = None
) -> Image:
    """x4 an image: colour (or grey as RGB), then alpha as its own grey image."""
    colour = upscale(_as_rgb(image.colour) if image.is_grey else image.colour, run, config, rerun_fp32, progress)
    alpha = None
    if image.alpha is not None:
        alpha = _as_grey(upscale(_as_rgb(image.alpha), run, config, rerun_fp32, progress))
    return Image(_as_grey(colour) if image.is_grey else colour, alpha)


def tiles_for(image: Image, config: TileConfig) -> int:
    """Passes `upscale_image` will run for this image (for progress bars)."""
    per_plane = count_tiles(image.colour.shape[0], image.colour.shape[1], config)
    return per_plane * (2 if image.alpha is not None else 1)


def resolve_inputs(spec: str) -> tuple[list[Path], bool]:
    """(image files, whether the user named a single file): a file, a folder (its images) or a glob."""
    path = Path(spec)
    if path.is_file():
        return [path], True
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READABLE)
        if not files:
            raise JobError(f"{path}: no images in this folder ({', '.join(sorted(READABLE))})")
        return files, False
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
        if not files:
            raise JobError(f"{spec}: no files match")
        return files, False
    raise JobError(f"{spec}: no such file or folder")


def previous_results(sources: list[Path], suffix: str) -> list[Path]:
    """Inputs that are this command's own outputs from an earlier run (`a_x4.png` beside `a.png`)."""
    if not suffix:
        return []
    stems = {(s.parent, s.stem) for s in sources}
    return [s for s in sources if s.stem.endswith(suffix) and (s.parent, s.stem[: -len(suffix)]) in stems]


def output_for(source: Path, single: bool, options: Options) -> Path:
    """Where one input's result goes: OUTPUT itself for one file, else OUTPUT/<name><suffix><ext>."""
    ext = options.ext if options.ext is None or options.ext.startswith(".") else f".{options.ext}"
    name = f"{source.stem}{options.suffix}{ext or source.suffix}"
    if options.output is None:
        return source.with_name(name)
    if single and not (options.output.is_dir() or str(options.output).endswith(os.sep)):
        return options.output.with_suffix(ext) if ext else options.output
    return options.output / name


def check_output(source: Path, target: Path, overwrite: bool, inputs: set[Path]) -> None:
    """Refuse to touch an input (`inputs`: all of this run's, resolved), or to replace an existing file
    without `overwrite`."""
    if target.resolve() == source.resolve() or (target.exists() and target.samefile(source)):
        raise ImageError(f"{target}: the output would overwrite its input; choose another name")
    if target.resolve() in inputs:
        raise ImageError(f"{target}: is also one of the inputs; choose another --suffix or folder")
    if target.exists() and not overwrite:
        raise ImageError(f"{target}: exists (use --overwrite to replace it)")
    if not target.parent.is_dir():
        raise ImageError(f"{target}: output folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise ImageError(f"{target}: output folder {target.parent} is not writable")


def run_job(
    sources: list[Path],
    single: bool,
    options: Options,
    upscale_one: Callable[[Image, Path], Image],
    on_error: Callable[[Path, str], None] = lambda _path, _message: None,
) -> Outcome:
    """Upscale every source, going on past bad files; each failure is recorded with its one-line reason."""
    outcome = Outcome()
    if not single and options.output is not None:
        if options.output.exists() and not options.output.is_dir():
            raise JobError(f"{options.output}: is a file; several inputs need an output folder")
        options.output.mkdir(parents=True, exist_ok=True)
    inputs = {s.resolve() for s in sources}
    for source in sources:
        target = output_for(source, single, options)
        try:
            check_output(source, target, options.overwrite, inputs)
            write_image(target, upscale_one(read_image(source), source))
            outcome.written.append(target)
        except (DeployError, ValueError, FloatingPointError, MemoryError) as exc:
            outcome.failed.append((source, str(exc)))
            on_error(source, str(exc))
    return outcome
