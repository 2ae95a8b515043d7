"""A run's inputs and outputs, decided before any work: which files INPUT names, and where each result goes.

Naming is written once for local paths and object-storage URIs (`s3://`, `gs://`): OUTPUT itself for one
input (unless it is a folder), else `OUTPUT/<name><suffix><ext>`, else beside the input. Every target is
checked before a model loads: a writable format, and no two inputs writing one file (`a.jpg` and `a.png`
with `--ext png` would otherwise replace each other's result).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core.errors import JobError
from core.files import is_temporary, make_writable_folder
from core.vocabulary import VIDEO_SUFFIXES
from runtime.images.io import READABLE, ImageError, output_problem, skip_reason
from runtime.settings import Settings

REMOTE = ("s3://", "gs://", "gcs://")


def is_remote(spec: str | Path) -> bool:
    """Whether `spec` is an object-storage URI rather than a local path."""
    return str(spec).lower().startswith(REMOTE)


@dataclass
class Inputs:
    """What a command's INPUT named: the image files to run, whether it was one file, and the files of a
    folder or glob that were passed over, each with the reason (the summary lists them)."""

    files: list[Path]
    single: bool
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    root: Path | None = None  # the folder a recursive run walked: results keep their place below it


def _sort_out(candidates: list[Path], walked: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    files, skipped = [], []
    for path in candidates:
        if not path.is_file():
            if path.is_dir():
                if not walked:
                    skipped.append((path, "a folder: its images are not taken (use --recursive)"))
                continue
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


def _walk(folder: Path, leave_out: Path | None) -> list[Path]:
    """Everything below `folder`, sorted, without descending into `leave_out` (a run's own output folder)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            if leave_out is None or entry.resolve() != leave_out:
                found += _walk(entry, leave_out)
        else:
            found.append(entry)
    return found


def resolve_inputs(spec: str, recursive: bool = False, output: Path | None = None) -> Inputs:
    """The image files INPUT names: a file, a folder (its files; with `recursive` also its sub-folders',
    never those of `output` inside it) or a glob (`**` with `recursive`). Temporaries of interrupted runs
    are never taken as inputs; other files a folder or glob holds that are not images, and sub-folders not
    walked, are listed as skipped."""
    path = Path(spec)
    if path.is_file():
        return Inputs([path], True)
    if path.is_dir():
        leave_out = output.resolve() if recursive and output is not None else None
        candidates = _walk(path, leave_out) if recursive else sorted(path.iterdir())
        files, skipped = _sort_out(candidates, walked=recursive)
        if not files:
            reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped[:3])
            raise JobError(f"{path}: no images in this folder ({', '.join(sorted(READABLE))})" + (f"; {reasons}" if reasons else ""))
        return Inputs(files, False, skipped, path if recursive else None)
    if glob.has_magic(spec):
        files, skipped = _sort_out(sorted(Path(p) for p in glob.glob(spec, recursive=recursive)), walked=recursive)
        if not files:
            raise JobError(f"{spec}: no image files match")
        return Inputs(files, False, skipped)
    if path.exists():
        raise JobError(f"{spec}: not a regular file or folder")
    raise JobError(f"{spec}: no such file or folder")


def previous_results(sources: list, suffix: str) -> list:
    """Inputs that are this command's own outputs from an earlier run (`a_x4.png` beside `a.png`); paths or
    object URIs (split at their last '/', so that `s3://` keeps both slashes)."""
    if not suffix:
        return []

    def parent_and_stem(source: str | Path) -> tuple[str, str]:
        parent, _, name = str(source).rpartition("/")
        return parent, PurePosixPath(name).stem

    stems = {parent_and_stem(s) for s in sources}
    found = []
    for source in sources:
        parent, stem = parent_and_stem(source)
        if stem.endswith(suffix) and (parent, stem[: -len(suffix)]) in stems:
            found.append(source)
    return found


def extension(settings: Settings) -> str | None:
    """--ext as a suffix with its dot, None for the input's own; JobError for a format that cannot be written."""
    ext = settings.ext
    if ext is None:
        return None
    ext = ext if ext.startswith(".") else f".{ext}"
    if ext.lower() not in READABLE:
        raise JobError(f"--ext {settings.ext}: cannot write that format (choose from {', '.join(sorted(READABLE))})")
    return ext


def _looks_like_a_file(output: Path) -> bool:
    """An OUTPUT that is an existing file, or a new name with an image format's extension (`single.png`)."""
    if output.is_dir() or str(output).endswith(os.sep):
        return False
    return output.is_file() or output.suffix.lower() in READABLE


def _names_a_folder(output: str | Path | None) -> bool:
    """An OUTPUT written as a folder (`out/`): made for a single input too."""
    return output is not None and not is_remote(output) and str(output).endswith(os.sep)


def _names_a_file(output: str | Path, single: bool) -> bool:
    """Whether OUTPUT is the result file itself: one input, and OUTPUT neither a folder nor ending in '/'."""
    if not single:
        return False
    if is_remote(output):
        return not str(output).endswith("/")
    return not (Path(output).is_dir() or str(output).endswith(os.sep))


def output_for(
    source: str | Path, single: bool, output: str | Path | None, settings: Settings, root: Path | None = None
) -> str | Path:
    """Where one input's result goes (a Path, or a URI for object storage; see the module docstring); below
    `root` (a recursive run's folder) a result keeps the source's place: OUTPUT/<sub-folders>/<name>."""
    ext = extension(settings)
    name = f"{PurePosixPath(source).stem}{settings.name_suffix}{ext or PurePosixPath(source).suffix}"
    if output is None:
        return Path(source).with_name(name)
    if is_remote(output):
        scheme, key = str(output).split("://", 1)
        if _names_a_file(output, single):
            return f"{scheme}://{PurePosixPath(key).with_suffix(ext)}" if ext else str(output)
        return f"{str(output).rstrip('/')}/{name}"
    if _names_a_file(output, single):
        return Path(output).with_suffix(ext) if ext else Path(output)
    output = Path(output)
    return output / Path(source).parent.relative_to(root) / name if root is not None else output / name


def plan_outputs(sources: list, single: bool, output: str | Path | None, settings: Settings, root: Path | None = None) -> list:
    """Every input's output (`output_for`), checked before any work: a writable format, an existing folder
    for a single output, and no two inputs writing the same file."""
    if not single and output is not None and not is_remote(output) and _looks_like_a_file(Path(output)):
        raise JobError(
            f"{output}: OUTPUT names a file, but INPUT is a folder or glob (of {len(sources)} image(s)); name a folder "
            "for the results (it is made if missing)"
        )
    targets = [output_for(source, single, output, settings, root) for source in sources]
    seen: dict[str, object] = {}
    for source, target in zip(sources, targets):
        suffix = PurePosixPath(str(target)).suffix
        if suffix.lower() not in READABLE:
            hint = "; for a folder, end OUTPUT with '/'" if not suffix else ""
            raise JobError(f"{target}: unknown output format '{suffix}' (use one of {', '.join(sorted(READABLE))}){hint}")
        if single and not is_remote(target) and not Path(target).parent.is_dir() and not _names_a_folder(output):
            raise JobError(f"{target}: output folder {Path(target).parent} does not exist")
        key = str(target) if is_remote(target) else os.path.normcase(os.path.abspath(target))
        if key in seen:
            raise JobError(
                f"{seen[key]} and {source} would both write {target}; nothing was done (use another --suffix or --ext, or separate folders)"
            )
        seen[key] = source
    return targets


@dataclass
class RunPlan:
    """A run decided before any work: every input with its output (Paths, or URIs for object storage), whether
    INPUT was one file, the files passed over with their reasons, and the inputs left out as this tool's
    results of an earlier run."""

    pairs: list[tuple]
    single: bool
    skipped: list[tuple] = field(default_factory=list)
    earlier: list = field(default_factory=list)
    refused: list[tuple] = field(default_factory=list)  # (source, why): decided from headers, before any work


def plan_run(inputs: str, output: str | Path | None, settings: Settings) -> RunPlan:
    """Resolve INPUT (a local file, folder or glob, or an object-storage object, prefix or glob), leave out
    earlier results among a folder's files, and plan and check every output (`plan_outputs`)."""
    root = None
    if is_remote(inputs):
        if settings.recursive:
            raise JobError(f"{inputs}: --recursive walks local folders only")
        from runtime.jobs.storage import remote_inputs

        sources, single, skipped = remote_inputs(inputs)
    else:
        local = None if output is None or is_remote(output) else Path(output)
        found = resolve_inputs(inputs, settings.recursive, local)
        sources, single, skipped, root = found.files, found.single, found.skipped, found.root
    earlier = [] if single else previous_results(sources, settings.name_suffix)
    left_out = set(earlier)
    sources = [s for s in sources if s not in left_out]
    targets = plan_outputs(sources, single, output, settings, root)
    pairs, refused = [], []
    for source, target in zip(sources, targets):
        if why := _cannot_write(source, target, settings.max_pixels, settings.outscale):
            refused.append((source, why))
        else:
            pairs.append((source, target))
    return RunPlan(pairs, single, skipped, earlier, refused)


def _cannot_write(source: str | Path, target: str | Path, max_pixels: int, scale: float) -> str | None:
    """Why this input's result cannot be written as its target's format (alpha into JPEG, 16-bit into WebP,
    a damaged header...), told from the input's header before any inference: the input is refused up front
    rather than after seconds or minutes of work. Object-storage inputs are told when they are decoded."""
    if is_remote(source):
        return None
    try:
        problem = output_problem(source, PurePosixPath(str(target)).suffix, max_pixels, scale)
    except ImageError as exc:
        return str(exc)
    return None if problem is None else f"{target}: {problem}"


def make_output_folder(output: str | Path | None, single: bool, targets: list[Path] = ()) -> None:
    """The output folder of a multi-file run, made (with its parents) and checked writable, and the
    sub-folders a recursive run's `targets` go into."""
    if (not single or _names_a_folder(output)) and output is not None:
        make_writable_folder(Path(output), "output folder ")
        for folder in sorted({Path(t).parent for t in targets} - {Path(output)}):  # a recursive run's sub-folders
            make_writable_folder(folder, "output folder ")
