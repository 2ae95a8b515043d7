"""Upscale files: resolve inputs and outputs, upscale each image (colour, greyscale, alpha), write safely.

Greyscale images run as R = G = B and come back as the mean of the three output channels; alpha follows
runtime/alpha.py. Nothing is ever lost: inputs are never written to; outputs are planned before any work
(no two inputs may write one file); an existing output is replaced only with --overwrite and only when it
is an earlier result of this tool for this input (exactly 4x its size); a result is committed exclusively,
so a file another process wrote meanwhile is kept.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from export.cli import VIDEO_SUFFIXES
from export.contract import SCALE
from export.errors import DeployError
from export.fileutil import is_temporary, make_writable_folder
from runtime.alpha import needs_network, upscale_alpha
from runtime.imageio import (
    DEFAULT_MAX_PIXELS,
    READABLE,
    Image,
    ImageError,
    is_result_of,
    read_image,
    skip_reason,
    write_image,
)
from runtime.memory import available_bytes, gib
from runtime.tiling import Run, TileConfig, count_tiles, upscale


class JobError(DeployError):
    """A problem with the command's inputs or outputs as a whole (not with one image)."""


class OutputError(DeployError):
    """An output that may not be written: it is an input, or it exists and may not be replaced."""


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
    """x4 an image: colour (or grey as RGB), then alpha by the rule in runtime/alpha.py; metadata carried over."""

    def grey(plane: np.ndarray) -> np.ndarray:
        return _as_grey(upscale(_as_rgb(plane), run, config, rerun_fp32, progress))

    colour = grey(image.colour) if image.is_grey else upscale(image.colour, run, config, rerun_fp32, progress)
    alpha = None if image.alpha is None else upscale_alpha(image.alpha, grey)
    return replace(image, colour=colour, alpha=alpha)


def tiles_for(image: Image, config: TileConfig) -> int:
    """Passes `upscale_image` will run for this image (for progress bars)."""
    per_plane = count_tiles(image.colour.shape[0], image.colour.shape[1], config)
    return per_plane * (2 if image.alpha is not None and needs_network(image.alpha) else 1)


def check_fits(image: Image, source: Path) -> None:
    """ImageError, before any work, when the x4 result alone would not fit in the memory available now."""
    planes = (1 if image.is_grey else 3) + (image.alpha is not None)
    height, width = image.colour.shape[0] * SCALE, image.colour.shape[1] * SCALE
    needed = height * width * max(planes, 3) * image.dtype.itemsize
    room = available_bytes()
    if room is not None and needed > room:
        raise ImageError(
            f"{source}: its x{SCALE} result ({width}x{height}, {gib(needed)}) needs more memory than the {gib(room)} available"
        )


@dataclass
class Inputs:
    """What a command's INPUT named: the image files to run, whether it was one file, and the files of a
    folder or glob that were passed over, each with the reason (the summary lists them)."""

    files: list[Path]
    single: bool
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _sort_out(candidates: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    files, skipped = [], []
    for path in candidates:
        if not path.is_file():
            if path.is_dir():
                continue  # sub-folders are not walked, and say nothing
            skipped.append((path, "a broken link" if path.is_symlink() else "not a regular file"))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            skipped.append((path, "a video: upscale it on its own (upscale.py clip.mp4 clip_x4.mp4)"))
        elif is_temporary(path):
            skipped.append((path, "a temporary file of an interrupted run (safe to delete)"))
        elif reason := skip_reason(path):
            skipped.append((path, reason))
        else:
            files.append(path)
    return files, skipped


def resolve_inputs(spec: str) -> Inputs:
    """The image files INPUT names: a file, a folder (its files) or a glob. Temporaries of interrupted runs
    are never taken as inputs; other files a folder or glob holds that are not images are listed as skipped."""
    path = Path(spec)
    if path.is_file():
        return Inputs([path], True)
    if path.is_dir():
        files, skipped = _sort_out(sorted(path.iterdir()))
        if not files:
            reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped[:3])
            raise JobError(f"{path}: no images in this folder ({', '.join(sorted(READABLE))})" + (f"; {reasons}" if reasons else ""))
        return Inputs(files, False, skipped)
    if glob.has_magic(spec):
        files, skipped = _sort_out(sorted(Path(p) for p in glob.glob(spec)))
        if not files:
            raise JobError(f"{spec}: no image files match")
        return Inputs(files, False, skipped)
    if path.exists():
        raise JobError(f"{spec}: not a regular file or folder")
    raise JobError(f"{spec}: no such file or folder")


def previous_results(sources: list[Path], suffix: str) -> list[Path]:
    """Inputs that are this command's own outputs from an earlier run (`a_x4.png` beside `a.png`)."""
    if not suffix:
        return []
    stems = {(s.parent, s.stem) for s in sources}
    return [s for s in sources if s.stem.endswith(suffix) and (s.parent, s.stem[: -len(suffix)]) in stems]


def _extension(options: Options) -> str | None:
    ext = options.ext
    if ext is None:
        return None
    ext = ext if ext.startswith(".") else f".{ext}"
    if ext.lower() not in READABLE:
        raise JobError(f"--ext {options.ext}: cannot write that format (choose from {', '.join(sorted(READABLE))})")
    return ext


def output_for(source: Path, single: bool, options: Options) -> Path:
    """Where one input's result goes: OUTPUT itself for one file, else OUTPUT/<name><suffix><ext>."""
    ext = _extension(options)
    name = f"{source.stem}{options.suffix}{ext or source.suffix}"
    if options.output is None:
        return source.with_name(name)
    if single and not (options.output.is_dir() or str(options.output).endswith(os.sep)):
        return options.output.with_suffix(ext) if ext else options.output
    return options.output / name


def plan_outputs(sources: list[Path], single: bool, options: Options) -> list[Path]:
    """Every input's output path, checked before any work: a writable format, and no two inputs writing
    the same file (`a.jpg` and `a.png` with --ext png would otherwise replace each other's result)."""
    targets = [output_for(source, single, options) for source in sources]
    seen: dict[str, Path] = {}
    for source, target in zip(sources, targets):
        if target.suffix.lower() not in READABLE:
            raise JobError(f"{target}: unknown output format '{target.suffix}' (use one of {', '.join(sorted(READABLE))})")
        if single and not target.parent.is_dir():
            raise JobError(f"{target}: output folder {target.parent} does not exist")
        key = os.path.normcase(os.path.abspath(target))
        if key in seen:
            raise JobError(
                f"{seen[key]} and {source} would both write {target}; nothing was done (use another --suffix or --ext, or separate folders)"
            )
        seen[key] = source
    return targets


def check_output(
    source: Path, target: Path, overwrite: bool, inputs: set[Path], is_result: Callable[[Path, Path], bool] = is_result_of
) -> bool:
    """Refuse to touch an input (`inputs`: all of this run's, resolved), or to replace an existing file that
    is not an earlier result of this tool for this input, or any existing file without `overwrite`.
    Returns whether the write may replace an existing file. `is_result` says whether an existing target is
    this tool's result for the source (images: runtime/imageio.py is_result_of; videos bring their own)."""
    if target.resolve() == source.resolve() or (target.exists() and target.samefile(source)):
        raise OutputError(f"{target}: the output would overwrite its input; choose another name")
    if target.resolve() in inputs:
        raise OutputError(f"{target}: is also one of the inputs; choose another --suffix or folder")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: output folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target}: output folder {target.parent} is not writable")
    if not (target.exists() or target.is_symlink()):
        return False
    if not overwrite:
        raise OutputError(f"{target}: exists (use --overwrite to replace an earlier result)")
    if target.is_symlink() or not target.is_file():
        raise OutputError(f"{target}: exists and is not a regular file; refusing to replace it, even with --overwrite")
    if not is_result(source, target):
        raise OutputError(
            f"{target}: exists and is not an earlier x4 result of {source.name} (not 4x its size, or not made by "
            "this tool); refusing to replace it, even with --overwrite"
        )
    return True


# What fails one image without stopping the run: reported, and the run goes on to the next input.
FAILURES = (DeployError, ValueError, FloatingPointError, MemoryError)


def prepare_outputs(sources: list[Path], single: bool, options: Options) -> list[Path]:
    """Every input's output path, checked (plan_outputs), and the output folder of a multi-file run made."""
    targets = plan_outputs(sources, single, options)
    if not single and options.output is not None:
        make_writable_folder(options.output, "output folder ")
    return targets


def run_job(
    sources: list[Path],
    single: bool,
    options: Options,
    upscale_one: Callable[[Image, Path], Image],
    on_error: Callable[[Path, str], None] = lambda _path, _message: None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Outcome:
    """Upscale every source in turn, going on past bad files; each failure is recorded with its one-line
    reason. runtime/pipelined.py runs the same steps overlapped."""
    outcome = Outcome()
    targets = prepare_outputs(sources, single, options)
    inputs = {s.resolve() for s in sources}
    for source, target in zip(sources, targets):
        try:
            replace = check_output(source, target, options.overwrite, inputs)
            write_image(target, upscale_one(read_image(source, max_pixels), source), replace=replace)
            outcome.written.append(target)
        except FAILURES as exc:
            outcome.failed.append((source, str(exc)))
            on_error(source, str(exc))
    return outcome
