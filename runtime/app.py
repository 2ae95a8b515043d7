"""What `upscale.py` does, as library calls: plan the run, open an `Upscaler`, drive the per-file step
(runtime/jobs/step.py) sequentially or pipelined, and print what a user reads on stderr."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from core.errors import DeployError, one_line
from runtime.images.io import Image
from runtime.jobs.pipelined import run_pipelined, stderr_stream
from runtime.jobs.plan import make_output_folder, plan_run
from runtime.jobs.step import run_sequential
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

    upscale_video, containers = load(source)
    if not source.is_file():
        raise DeployError(f"{source}: no such file")
    target = output
    if target is None:
        suffix = source.suffix if source.suffix.lower() in containers else ".mkv"
        target = source.with_name(f"{source.stem}{settings.suffix}{suffix}")
    with Upscaler(settings) as upscaler:
        if not settings.quiet:
            _announce(upscaler)
        result = upscale_video(source, target, upscaler, progress=not settings.quiet)
    for line in result.dropped:
        _say(f"warning: left out {line}")
    if not settings.quiet:
        _say(f"1 written, 0 failed: {result.target} ({result.frames} frames, {result.encoder})")
    return 0


def upscale_on_cluster(inputs: str, output: Path | None, settings: Settings, address: str | None) -> int:
    """The same job on a Ray cluster (runtime/cluster.py): inputs and OUTPUT local, shared or s3://, gs://."""
    try:
        from runtime.cluster import run_cluster
    except ImportError:
        raise DeployError("--cluster ray needs Ray Data: pip install -e '.[cluster]'") from None
    if output is None:
        raise DeployError("--cluster ray needs an OUTPUT folder")
    if settings.engine is not None or settings.key is not None:
        raise DeployError("--cluster ray takes its model from --engines-dir, --onnx or --ckpt (not --engine or --key)")
    return run_cluster(inputs, str(output), settings, address=address)


def upscale_files(inputs: str, output: Path | None, settings: Settings, pipelined: bool = True) -> int:
    """Run the images INPUT names into OUTPUT; returns the exit status (1 if any image failed). DeployError
    escapes for setup errors. `pipelined`: several inputs are decoded, upscaled and encoded overlapped."""
    from tqdm import tqdm

    run_plan = plan_run(inputs, output, settings)  # a bad --ext or a collision fails before any model loads
    pairs, single, quiet = run_plan.pairs, run_plan.single, settings.quiet
    if run_plan.earlier and not quiet:
        _say(f"skipping {len(run_plan.earlier)} earlier result(s) among the inputs (names ending in {settings.suffix})")
    for path, why in run_plan.skipped:
        _say(one_line(f"skipped {path}: {why}"))
    with contextlib.ExitStack() as stack:
        upscaler = stack.enter_context(Upscaler(settings))
        if not quiet:
            _announce(upscaler)
        make_output_folder(output, single)
        pipelined = pipelined and not single
        stream = stderr_stream() if pipelined else sys.stderr
        images = stack.enter_context(tqdm(total=len(pairs), unit="image", disable=quiet or single, file=stream))

        def upscale_one(image: Image, source: Path) -> Image:
            total = upscaler.passes(image)
            with tqdm(total=total, unit="tile", desc=source.name, leave=False, disable=quiet or total < 2,
                      file=stream) as bar:  # fmt: skip
                result = upscaler.upscale_image(image, bar.update, source)
            images.update(1)
            return result

        def report(_source: Path, message: str) -> None:
            images.write(f"error: {one_line(message)}", file=stream)

        run = run_pipelined if pipelined else run_sequential
        outcome = run(pairs, upscale_one, settings.overwrite, settings.max_pixels, report)
    if not quiet or outcome.failed or run_plan.skipped:
        done = f"{len(outcome.written)} written, {len(outcome.failed)} failed"
        done += f", {len(run_plan.skipped)} skipped" if run_plan.skipped else ""
        _say(f"{done}: {outcome.written[0]}" if single and outcome.written else done)
    return 1 if outcome.failed else 0
