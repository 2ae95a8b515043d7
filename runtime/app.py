"""What `upscale.py` does, as a library call: pick the model and backend, then upscale the files."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from export.errors import DeployError, one_line
from runtime.imageio import DEFAULT_MAX_PIXELS, Image
from runtime.job import (
    Options,
    plan_outputs,
    previous_results,
    resolve_inputs,
    run_job,
    tiles_for,
)
from runtime.pipelined import run_pipelined, stderr_stream
from runtime.upscaler import Upscaler


@dataclass
class Request:
    inputs: str
    options: Options
    backend: str = "auto"
    precision: str | None = None
    tile: int | None = None
    overlap: int | None = None
    ckpt: Path | None = None
    onnx: Path | None = None
    engine: Path | None = None
    engines_dir: Path | None = None  # None: the lookup order of runtime/selection.py engines_dirs()
    key: str | None = None
    quiet: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    pipelined: bool = True  # several inputs: decode, inference and encode overlapped (runtime/pipelined.py)
    video: dict = field(default_factory=dict)  # codec, crf, preset for a video input (runtime/video.py)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _upscaler(request: Request) -> Upscaler:
    return Upscaler(
        request.backend, request.precision, request.tile, request.overlap, ckpt=request.ckpt, onnx=request.onnx,
        engine=request.engine, engines_dir=request.engines_dir, key=request.key, max_pixels=request.max_pixels,
    )  # fmt: skip


def _announce(upscaler: Upscaler) -> None:
    _say(f"model: {upscaler.model.origin}")
    _say(f"backend: {upscaler.backend} - {upscaler.reason}")
    for line in upscaler.skipped:
        _say(f"  skipped {line}")


def upscale_video_file(request: Request) -> int:
    """One video in, one video out (runtime/video.py); the output defaults to `<name><suffix>` beside it."""
    try:
        from runtime.video import upscale_video
        from runtime.video_codecs import CONTAINERS
    except ImportError:
        raise DeployError(f"{request.inputs}: videos need PyAV: pip install -e '.[video]'") from None
    source = Path(request.inputs)
    if not source.is_file():
        raise DeployError(f"{source}: no such file")
    target = request.options.output
    if target is None:
        suffix = source.suffix if source.suffix.lower() in CONTAINERS else ".mkv"
        target = source.with_name(f"{source.stem}{request.options.suffix}{suffix}")
    with _upscaler(request) as upscaler:
        if not request.quiet:
            _announce(upscaler)
        result = upscale_video(
            source, target, upscaler, **request.video, overwrite=request.options.overwrite, progress=not request.quiet
        )
    for line in result.dropped:
        _say(f"warning: left out {line}")
    if not request.quiet:
        _say(f"1 written, 0 failed: {result.target} ({result.frames} frames, {result.encoder})")
    return 0


def upscale_on_cluster(request: Request, address: str | None) -> int:
    """The same job on a Ray cluster (runtime/cluster.py): inputs and OUTPUT local, shared or s3://, gs://."""
    try:
        from runtime.cluster import Settings, run_cluster
    except ImportError:
        raise DeployError("--cluster ray needs Ray Data: pip install -e '.[cluster]'") from None
    if request.options.output is None:
        raise DeployError("--cluster ray needs an OUTPUT folder")
    if request.engine is not None or request.key is not None:
        raise DeployError("--cluster ray takes its model from --engines-dir, --onnx or --ckpt (not --engine or --key)")
    settings = Settings(
        request.backend, request.precision, request.tile, request.overlap, ckpt=_text(request.ckpt),
        onnx=_text(request.onnx), engines_dir=_text(request.engines_dir), max_pixels=request.max_pixels,
    )  # fmt: skip
    return run_cluster(request.inputs, str(request.options.output), address=address, settings=settings,
                       options=request.options, quiet=request.quiet)  # fmt: skip


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def upscale_files(request: Request) -> int:
    """Run the request; returns the exit status (1 if any image failed). DeployError escapes for setup errors."""
    from tqdm import tqdm

    found = resolve_inputs(request.inputs)
    sources, single = found.files, found.single
    if not single and (earlier := previous_results(sources, request.options.suffix)):
        sources = [s for s in sources if s not in earlier]
        if not request.quiet:
            _say(f"skipping {len(earlier)} earlier result(s) among the inputs (names ending in {request.options.suffix})")
    for path, why in found.skipped:
        _say(one_line(f"skipped {path}: {why}"))
    plan_outputs(sources, single, request.options)  # a bad --ext or a collision fails before any model loads
    upscaler = _upscaler(request)
    with contextlib.ExitStack() as stack:
        stack.enter_context(upscaler)
        if not request.quiet:
            _announce(upscaler)
        pipelined = request.pipelined and not single
        stream = stderr_stream() if pipelined else sys.stderr
        images = stack.enter_context(
            tqdm(total=len(sources), unit="image", disable=request.quiet or single, file=stream)
        )

        def upscale_one(image: Image, source: Path) -> Image:
            total = tiles_for(image, upscaler.config)
            with tqdm(total=total, unit="tile", desc=source.name, leave=False, disable=request.quiet or total < 2,
                      file=stream) as bar:  # fmt: skip
                result = upscaler.upscale_image(image, bar.update, source)
            images.update(1)
            return result

        def report(_source: Path, message: str) -> None:
            images.write(f"error: {one_line(message)}", file=stream)

        run = run_pipelined if pipelined else run_job
        outcome = run(sources, single, request.options, upscale_one, report, request.max_pixels)
    if not request.quiet or outcome.failed or found.skipped:
        done = f"{len(outcome.written)} written, {len(outcome.failed)} failed"
        done += f", {len(found.skipped)} skipped" if found.skipped else ""
        _say(f"{done}: {outcome.written[0]}" if single and outcome.written else done)
    return 1 if outcome.failed else 0
