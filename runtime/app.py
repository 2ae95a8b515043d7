"""What `upscale.py` does, as library calls: plan the run, open an `Upscaler`, drive the per-file step
(runtime/jobs/step.py) sequentially or pipelined, and print what a user reads on stderr."""

from __future__ import annotations

import contextlib
import itertools
import sys
from pathlib import Path

from core.errors import DeployError, OutputError, one_line
from runtime.images.io import READABLE, Image
from runtime.jobs.pipelined import run_pipelined, stderr_stream
from runtime.jobs.plan import make_output_folder, plan_run
from runtime.jobs.step import LocalFile, Outcome, run_sequential
from runtime.settings import Settings
from runtime.upscaler import Upscaler


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _announce(upscaler: Upscaler) -> None:
    _say(f"model: {upscaler.model.origin}")
    _say(f"backend: {upscaler.backend} - {upscaler.choice.reason}")
    for line in upscaler.choice.skipped:
        _say(f"  skipped {line}")


def upscale_video_file(source: Path, output: Path | None, settings: Settings) -> int:
    """One video in, one video out (runtime/video/upscale.py); the output defaults to `<name><suffix>` beside it."""
    from runtime.video import load

    video = load(source)
    video.check_scale(source, settings.outscale)  # before the model loads
    if not source.is_file():
        raise DeployError(f"{source}: no such file")
    target = output
    if target is None:
        suffix = source.suffix if source.suffix.lower() in video.CONTAINERS else ".mkv"
        target = source.with_name(f"{source.stem}{settings.name_suffix}{suffix}")
    if not settings.overwrite and target.is_file() and video.is_result(source, target):
        if not settings.quiet:  # the rule of every run: a complete earlier result is skipped, before any model loads
            _say(f"0 written, 0 failed, 1 skipped (complete): {target}")
        return 0
    with Upscaler(settings) as upscaler:
        if not settings.quiet:
            _announce(upscaler)
        result = video.upscale_video(source, target, upscaler, progress=not settings.quiet and sys.stderr.isatty())
    for line in result.dropped:
        _say(f"warning: left out {line}")
    if not settings.quiet:
        _say(f"1 written, 0 failed: {result.target} ({result.frames} frames, {result.encoder})")
    return 0


def upscale_on_cluster(inputs: str, output: str | None, settings: Settings, address: str | None) -> int:
    """The same job on a Ray cluster (runtime/cluster.py): inputs and OUTPUT local, shared or s3://, gs://."""
    try:
        from runtime.cluster import run_cluster
    except ImportError:
        raise DeployError("--cluster ray needs Ray Data: pip install -e '.[cluster]'") from None
    if output is None:
        raise DeployError("--cluster ray needs an OUTPUT folder")
    if settings.engine is not None or settings.key is not None:
        raise DeployError("--cluster ray takes its model from --engines-dir, --onnx or --ckpt (not --engine or --key)")
    return run_cluster(inputs, output, settings, address=address)


def upscale_files(inputs: str, output: str | Path | None, settings: Settings, pipelined: bool = True) -> int:
    """Run the images INPUT names into OUTPUT; returns the exit status (1 if any image failed). DeployError
    escapes for setup errors. `pipelined`: several inputs are decoded, upscaled and encoded overlapped."""
    run_plan = plan_run(inputs, output, settings)  # a bad --ext or a collision fails before any model loads
    pairs, single, quiet = run_plan.pairs, run_plan.single, settings.quiet
    if run_plan.earlier and not quiet:
        _say(f"skipping {len(run_plan.earlier)} earlier result(s) among the inputs (names ending in {settings.name_suffix})")
    for path, why in run_plan.skipped:
        _say(one_line(f"skipped {path}: {why}"))
    for _source, why in run_plan.refused:
        _say(f"error: {one_line(why)}")
    # Complete earlier results are told apart once, here (the step would skip them too): a re-run with
    # nothing left to do loads no model, and progress counts only what is left.
    done = set() if settings.overwrite else {i for i, (s, t) in enumerate(pairs) if LocalFile(t, settings.outscale).complete(s)}
    todo = [pair for i, pair in enumerate(pairs) if i not in done]
    if single and output is not None and todo:
        _check_named_output(*todo[0], settings.overwrite, settings.outscale)
    outcome = _run(todo, single, output, settings, pipelined and not single) if todo else Outcome()
    outcome.skipped[:0] = [pairs[i][1] for i in sorted(done)]
    outcome.failed[:0] = [(source, why) for source, why in run_plan.refused]
    if not quiet or outcome.failed or run_plan.skipped:
        done = f"{len(outcome.written)} written, {len(outcome.failed)} failed"
        done += f", {len(outcome.skipped)} skipped (complete)" if outcome.skipped else ""
        done += f", {len(run_plan.skipped)} skipped" if run_plan.skipped else ""
        shown = outcome.written or outcome.skipped
        _say(f"{done}: {shown[0]}" if single and shown else done)
    return 1 if outcome.failed else 0


def _check_named_output(source: Path, target: Path, overwrite: bool, scale: float) -> None:
    """One input into an OUTPUT that is there and not its complete result: refused before the model loads,
    with the usual cause named (`upscale.py *.jpg` expanded by the shell into INPUT and OUTPUT)."""
    if not target.parent.is_dir():
        return  # a folder still to be made (OUTPUT ending in '/')
    try:
        LocalFile(target, scale).check(source, overwrite, {source.resolve()})
    except OutputError as exc:
        if target.is_file() and target.suffix.lower() in READABLE:
            raise OutputError(f"{exc} (if the shell expanded an unquoted glob into INPUT and OUTPUT, quote it)") from None
        raise


def _run(pairs: list[tuple[Path, Path]], single: bool, output: str | Path | None, settings: Settings, pipelined: bool) -> Outcome:
    """Open the model, say which, and drive the per-file step over `pairs` with progress on stderr: bars on
    a terminal, and in a log (stderr not a terminal) a plain line per image instead of escape codes."""
    from tqdm import tqdm

    quiet = settings.quiet
    with contextlib.ExitStack() as stack:
        upscaler = stack.enter_context(Upscaler(settings))
        if not quiet:
            _announce(upscaler)
        make_output_folder(output, single, [t for _, t in pairs])
        stream = stderr_stream() if pipelined else sys.stderr
        bars, lines = not quiet and sys.stderr.isatty(), not quiet and not sys.stderr.isatty() and not single
        images = stack.enter_context(tqdm(total=len(pairs), unit="image", disable=not bars or single, file=stream))
        done = itertools.count(1)

        def upscale_one(image: Image, source: Path) -> Image:
            total = upscaler.passes(image)
            with tqdm(total=total, unit="tile", desc=source.name, leave=False, disable=not bars or total < 2,
                      file=stream) as bar:  # fmt: skip
                result = upscaler.upscale_image(image, bar.update, source)
            images.update(1)
            if lines:
                print(one_line(f"upscaled {source} ({next(done)} of {len(pairs)})"), file=stream)
            return result

        def report(_source: Path, message: str) -> None:
            images.write(f"error: {one_line(message)}", file=stream)

        run = run_pipelined if pipelined else run_sequential
        return run(pairs, upscale_one, settings.overwrite, settings.max_pixels, report, scale=settings.outscale)
