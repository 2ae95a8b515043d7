"""The one per-file step every run is made of: prepare (check the output, decode the input), upscale,
commit (write the result atomically). The sequential run calls `run_one`; the pipelined run, the cluster
and video schedule the same phases on their own threads, tasks or streams, and the library's
`Upscaler.upscale_file` is `run_one`. A check written here holds for all of them.

Re-runs resume: a target that already holds this tool's complete result for its input is skipped
(`Complete`) unless `overwrite`, which redoes it. Nothing is lost: an input is never written to; an
existing output is replaced only with `overwrite`, only when it is an earlier result of this tool for this
input, and only if it is still the very file that was checked at the commit (core/files.py Checked); a
commit without `overwrite` is exclusive, so a file another process wrote meanwhile is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from core.descriptor import SCALE
from core.errors import DeployError, OutputError
from core.files import Checked, Replace
from runtime.images.io import (
    CAPTURE_LOCK,
    UNMARKED,
    Image,
    is_result_of,
    read_image,
    write_image,
)

# What fails one file without stopping the run: reported, and the run goes on to the next input.
FAILURES = (DeployError, ValueError, FloatingPointError, MemoryError)

Upscale = Callable[[Image, Path], Image]


class Complete(Exception):
    """The target already holds this tool's complete result for the input, so the step is skipped: a re-run
    resumes where the last one stopped. With `overwrite` the step is redone instead."""


@dataclass
class Outcome:
    """What a run did: the results written, the inputs that failed with their one-line reasons, and the
    results already complete from an earlier run (skipped: a re-run resumes)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # complete earlier results, left as they were

    def record(self, source: Path, target: Path, error: BaseException | None) -> str | None:
        """Record how one input's step ended (`error` None: written); returns the reason when it failed,
        for the driver to report. An error that is not a failure of this file (a bug) is raised."""
        if error is None:
            self.written.append(target)
        elif isinstance(error, Complete):
            self.skipped.append(target)
        elif isinstance(error, FAILURES):
            self.failed.append((source, str(error)))
            return str(error)
        else:
            raise error
        return None


def check_output(
    source: Path, target: Path, overwrite: bool, inputs: set[Path], is_result: Callable[[Path, Path], bool] = is_result_of
) -> Checked | None:
    """Refuse to touch an input (`inputs`: all of this run's, resolved), or to replace an existing file that
    is not an earlier result of this tool for this input, or any existing file without `overwrite`.
    Returns None when nothing is there, else the earlier result as checked: the commit replaces that very
    file and nothing that took its place meanwhile (core/files.py). `is_result` says whether an existing
    target is this tool's result for the source (images: runtime/images/io.py is_result_of; videos bring
    their own)."""
    if target.resolve() == source.resolve() or (target.exists() and target.samefile(source)):
        raise OutputError(f"{target}: the output would overwrite its input; choose another name")
    if target.resolve() in inputs:
        raise OutputError(f"{target}: is also one of the inputs; choose another --suffix or folder")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: output folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target}: output folder {target.parent} is not writable")
    if not (target.exists() or target.is_symlink()):
        return None
    if target.is_symlink() or not target.is_file():
        raise OutputError(
            f"{target}: exists and is not a regular file; refusing to replace it" + (", even with --overwrite" if overwrite else "")
        )
    checked = Checked.of(target)  # before it is judged: a file swapped in later is not what was checked
    if target.suffix.lower() in UNMARKED:
        raise OutputError(
            f"{target}: exists, and a {target.suffix} file holds no mark of this tool, so an earlier result cannot be "
            "told from a photo; refusing to replace it, even with --overwrite (delete it first)"
        )
    if not is_result(source, target):
        raise OutputError(
            f"{target}: exists and is not an earlier x4 result of {source.name} (not 4x its size, or not made by "
            "this tool); refusing to replace it" + (", even with --overwrite" if overwrite else "")
        )
    if not overwrite:  # an earlier result, and the caller asked to keep it (prepare skips such a target first)
        raise OutputError(f"{target}: exists, an earlier result of {source.name}; kept (overwrite to redo it)")
    return checked


class Target(Protocol):
    """Where one result goes: a local file (LocalFile) or an object (runtime/jobs/storage.py ObjectTarget)."""

    def check(self, source: Path, overwrite: bool, inputs: set[Path]) -> Replace:
        """OutputError unless the result may be written; returns what the commit may replace (None: nothing)."""

    def complete(self, source: Path) -> bool:
        """Whether a complete earlier result of this tool for `source` is already there."""

    def commit(self, result: Image, replace: Replace) -> None:
        """Write the result whole, replacing only what `replace` allows."""


@dataclass(frozen=True)
class LocalFile:
    """A result file on a local or shared file system, `scale` times its input's size."""

    path: Path
    scale: float = SCALE

    def check(self, source: Path, overwrite: bool, inputs: set[Path]) -> Replace:
        return check_output(source, self.path, overwrite, inputs, lambda s, t: is_result_of(s, t, self.scale))

    def complete(self, source: Path) -> bool:
        return self.path.is_file() and is_result_of(source, self.path, self.scale)

    def commit(self, result: Image, replace: Replace) -> None:
        write_image(self.path, result, replace=replace)


def _target(target: Path | Target, scale: float) -> Target:
    return LocalFile(target, scale) if isinstance(target, Path) else target


@dataclass
class Prepared:
    """An input decoded, and whether its commit may replace an existing earlier result."""

    image: Image
    replace: Replace


def prepare(
    source: Path, target: Path | Target, overwrite: bool, inputs: set[Path], max_pixels: int, scale: float = SCALE
) -> Prepared:
    """Check the output first (cheap), then decode the input; Complete, before any of it, when the target is
    already this tool's complete result and not `overwrite`. Decoding holds imageio's capture lock, so a
    thread that prints through runtime/jobs/pipelined.py stderr_stream() never lands inside its capture.
    `scale`: what a complete result of a Path target is (x4, or --outscale)."""
    target = _target(target, scale)
    if not overwrite and target.complete(source):
        raise Complete(source)
    replace = target.check(source, overwrite, inputs)
    with CAPTURE_LOCK:
        return Prepared(read_image(source, max_pixels), replace)


def commit(target: Path | Target, result: Image, replace: Replace) -> None:
    """Write one result atomically, replacing only what `replace` allows (what prepare checked)."""
    _target(target, result.outscale).commit(result, replace)


def run_one(
    source: Path, target: Path, upscale: Upscale, overwrite: bool, inputs: set[Path], max_pixels: int, scale: float = SCALE
) -> Path:
    """The whole step for one file, in the calling thread (Complete when there is nothing to do)."""
    prepared = prepare(source, target, overwrite, inputs, max_pixels, scale)
    commit(target, upscale(prepared.image, source), prepared.replace)
    return target


def run_sequential(
    pairs: list[tuple[Path, Path]],
    upscale: Upscale,
    overwrite: bool,
    max_pixels: int,
    on_error: Callable[[Path, str], None] = lambda _path, _message: None,
    scale: float = SCALE,
) -> Outcome:
    """`run_one` for every (source, target) in turn, going on past bad files; each failure is recorded with
    its one-line reason. runtime/jobs/pipelined.py runs the same phases overlapped."""
    outcome = Outcome()
    inputs = {s.resolve() for s, _ in pairs}
    for source, target in pairs:
        try:
            run_one(source, target, upscale, overwrite, inputs, max_pixels, scale)
            error = None
        except (Complete, *FAILURES) as exc:
            error = exc
        if (reason := outcome.record(source, target, error)) is not None:
            on_error(source, reason)
    return outcome
