"""What `upscale.py` does, as a library call: pick the model and backend, then upscale the files."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.imageio import DEFAULT_MAX_PIXELS, Image
from runtime.job import (
    Options,
    check_fits,
    plan_outputs,
    previous_results,
    resolve_inputs,
    run_job,
    tiles_for,
    upscale_image,
)
from runtime.selection import choose_backend, resolve_model, self_check, tile_config


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
    engines_dir: Path = Path("engines")
    key: str | None = None
    quiet: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS


def _say(text: str) -> None:
    print(text, file=sys.stderr)


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
        _say(f"skipped {path}: {why}")
    plan_outputs(sources, single, request.options)  # a bad --ext or a collision fails before any model loads
    model = resolve_model(request.ckpt, request.onnx, request.engine, request.engines_dir, request.key)
    backend = choose_backend(request.backend, model, request.precision)
    with contextlib.ExitStack() as stack:
        stack.enter_context(backend)
        config = tile_config(backend, request.tile, request.overlap)
        if not request.quiet:
            _say(f"model: {model.origin}")
            _say(f"backend: {backend.describe()} - {backend.reason}")
            for line in backend.skipped:
                _say(f"  skipped {line}")
        rerun = backend.fp32_rerun()

        def rerun_fp32(batch: np.ndarray) -> np.ndarray:
            """The FP32 fallback is loaded (and self-checked) only when a tile first needs it."""
            if not rerun.active:
                rerun.activate()
                self_check(rerun, model)
            return rerun.infer(batch)

        if rerun is not None:
            stack.callback(rerun.deactivate)
        images = stack.enter_context(
            tqdm(total=len(sources), unit="image", disable=request.quiet or single, file=sys.stderr)
        )

        def upscale_one(image: Image, source: Path) -> Image:
            check_fits(image, source)
            total = tiles_for(image, config)
            with tqdm(total=total, unit="tile", desc=source.name, leave=False, disable=request.quiet or total < 2,
                      file=sys.stderr) as bar:  # fmt: skip
                result = upscale_image(image, backend.infer, config, rerun_fp32 if rerun else None, bar.update)
            images.update(1)
            return result

        def report(_source: Path, message: str) -> None:
            images.write(f"error: {message}", file=sys.stderr)

        outcome = run_job(sources, single, request.options, upscale_one, report, request.max_pixels)
    if not request.quiet or outcome.failed or found.skipped:
        done = f"{len(outcome.written)} written, {len(outcome.failed)} failed"
        done += f", {len(found.skipped)} skipped" if found.skipped else ""
        _say(f"{done}: {outcome.written[0]}" if single and outcome.written else done)
    return 1 if outcome.failed else 0
