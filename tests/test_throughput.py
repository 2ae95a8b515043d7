"""Throughput levers that must not change a result: the pipelined folder run (runtime/jobs/pipelined.py) against
the sequential one, and the OpenVINO backend's model cache and precisions."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from core.errors import BackendError
from runtime import Upscaler
from runtime.backends.openvino import OpenVINOBackend, cpu_has_bf16
from runtime.images.io import Image
from runtime.jobs import pipelined as pipelined_module
from runtime.jobs import step
from runtime.jobs.pipelined import run_pipelined
from runtime.jobs.plan import plan_outputs
from runtime.jobs.step import run_sequential
from runtime.settings import Settings
from tests.conftest import ROOT


def _small(name: str, side: int = 40) -> np.ndarray:
    """A scikit-image photo shrunk to `side` pixels high, in OpenCV's channel order."""
    image = getattr(data, name)()
    image = cv2.resize(image, (image.shape[1] * side // image.shape[0], side), interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    return image


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Real photos of mixed kinds and sizes (colour, grey, RGBA, 16-bit, JPEG) and one damaged file."""
    folder = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(folder / "astronaut.png"), _small("astronaut", 48))
    cv2.imwrite(str(folder / "camera.png"), _small("camera", 32))
    cv2.imwrite(str(folder / "chelsea.jpg"), _small("chelsea", 36))
    cv2.imwrite(str(folder / "coffee16.png"), _small("coffee", 30).astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "logo.png"), _small("logo", 40))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return folder


@pytest.fixture(scope="module")
def upscaler(exported):
    with Upscaler(engines_dir=exported[0]) as up:
        yield up


def _pairs(sources: list[Path], out: Path, settings: Settings = Settings()) -> list[tuple[Path, Path]]:
    out.mkdir(exist_ok=True)
    return list(zip(sources, plan_outputs(sources, False, out, settings)))


def _run(runner, sources: list[Path], out: Path, upscaler, **options):
    """One folder run into `out` (made, with a foreign file where camera's result would go): the outcome with
    `out` written as OUT (so two runs compare), the error reports in order, and the files written."""
    out.mkdir()
    (out / f"camera_x4{options.get('ext') and '.' + options['ext'] or '.png'}").write_bytes(b"not ours")
    reports: list[str] = []
    settings = Settings(**options)
    outcome = runner(
        _pairs(sources, out, settings), lambda image, _source: upscaler.upscale_image(image), settings.overwrite,
        settings.max_pixels, lambda _source, message: reports.append(message),
    )  # fmt: skip
    strip = lambda text: str(text).replace(str(out), "OUT")
    summary = ([strip(p) for p in outcome.written], [(p.name, strip(m)) for p, m in outcome.failed], [strip(r) for r in reports])
    return summary, {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("ext", [None, "jpg"], ids=["as-input", "all-jpeg"])
def test_pipelined_writes_the_same_bytes_and_summary_as_sequential(tmp_path, folder, upscaler, ext) -> None:
    # all-jpeg makes the 16-bit and RGBA inputs fail in the encoder threads, the other failures come from
    # the reader (damaged file, existing output): every failure kind, listed and reported in input order.
    sources = sorted(folder.iterdir())
    options = {"ext": ext} if ext else {}
    sequential = _run(run_sequential, sources, tmp_path / "a", upscaler, **options)
    pipelined = _run(
        lambda *a: run_pipelined(*a, depth=1, encoders=2), sources, tmp_path / "b", upscaler, **options
    )  # fmt: skip
    assert pipelined == sequential
    written, failed, reports = sequential[0]
    assert [name for name, _ in failed] == (
        ["broken.png", "camera.png"] if ext is None else ["broken.png", "camera.png", "coffee16.png", "logo.png"]
    )
    assert reports == [message for _, message in failed] and len(written) + len(failed) == len(sources)


def _worker_threads() -> list[str]:
    """The run's threads still alive a moment after it returned (they end right after signalling it)."""
    workers = [t for t in threading.enumerate() if t.name == "decoder" or t.name.startswith("encoder")]
    for thread in workers:
        thread.join(timeout=1)
    return [t.name for t in workers if t.is_alive()]


def test_interrupt_stops_every_thread_and_leaves_only_complete_files(tmp_path, folder, upscaler) -> None:
    sources = [p for p in sorted(folder.iterdir()) if p.name != "broken.png"]
    seen: list[Path] = []

    def upscale_one(image: Image, source: Path) -> Image:
        seen.append(source)
        if len(seen) == 3:
            raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, through core/errors.py) raises here
        return upscaler.upscale_image(image)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_pipelined(_pairs(sources, out), upscale_one, False, Settings().max_pixels, encoders=2)
    assert _worker_threads() == []
    left = sorted(p.name for p in out.iterdir())
    # Only results of the two images before the interrupt (an encode still queued is dropped), each complete.
    assert set(left) <= {"astronaut_x4.png", "camera_x4.png"}
    for name in left:
        source = cv2.imread(str(folder / name.replace("_x4", "")), cv2.IMREAD_UNCHANGED)
        assert cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED).shape[:2] == (source.shape[0] * 4, source.shape[1] * 4)


def test_what_the_run_prints_waits_for_a_codec_capture_to_end() -> None:
    # A line printed while imageio has fd 2 redirected would be lost, or read as the image's damage report.
    stream, printed = pipelined_module.stderr_stream(), threading.Event()
    with pipelined_module.CODEC:
        writer = threading.Thread(target=lambda: (stream.write(""), printed.set()))
        writer.start()
        assert not printed.wait(0.2)
    assert printed.wait(5)
    writer.join()


def test_a_bug_in_the_reader_is_raised_not_hung_on(tmp_path, folder, monkeypatch) -> None:
    monkeypatch.setattr(step, "read_image", lambda *_a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_pipelined(_pairs(sorted(folder.iterdir()), tmp_path / "out"), lambda image, _s: image, False, Settings().max_pixels)
    assert _worker_threads() == []


def test_decoded_images_ahead_of_inference_stay_within_the_queue_depth(tmp_path, folder, monkeypatch) -> None:
    read, ahead = [], []
    real_read = step.read_image
    monkeypatch.setattr(step, "read_image", lambda *a: read.append(1) or real_read(*a))
    upscaled = []

    def upscale_one(image: Image, _source: Path) -> Image:
        time.sleep(0.05)  # a slow backend: the reader runs as far ahead as it may
        upscaled.append(1)
        ahead.append(len(read) - len(upscaled))
        stretch = lambda a: None if a is None else np.repeat(np.repeat(a, 4, axis=0), 4, axis=1)
        return Image(stretch(image.colour), stretch(image.alpha), image.icc, image.exif)

    sources = []
    for i in range(2):
        for path in sorted(folder.iterdir()):
            if path.name != "broken.png":
                sources.append(tmp_path / f"{i}{path.name}")
                sources[-1].write_bytes(path.read_bytes())
    run_pipelined(_pairs(sources, tmp_path / "out"), upscale_one, False, Settings().max_pixels, depth=2)
    # Queued (depth) plus the one the reader holds while the queue is full.
    assert max(ahead) <= 3


def test_sigterm_during_a_folder_run_leaves_no_temporary(tmp_path, exported) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        cv2.imwrite(str(inputs / f"{i}.png"), _small(name, 200))
    command = [sys.executable, str(ROOT / "upscale.py"), str(inputs), str(out), "--engines-dir", str(exported[0]), "--quiet"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:  # signal while the encoder thread writes
        if out.is_dir() and any(".part" in p.name for p in out.iterdir()):
            break
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    for path in out.iterdir():  # whatever was committed is complete; no temporary is left
        assert ".part" not in path.name
        assert cv2.imread(str(path)).shape[0] == 800


def test_openvino_model_cache_gives_identical_outputs(tmp_path, exported, monkeypatch) -> None:
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path))
    tile = np.ascontiguousarray(data.astronaut()[:48, :64].transpose(2, 0, 1)[None], dtype=np.float32) / 255
    outputs = []
    for _ in range(2):  # the first compiles and fills the cache, the second loads from it
        with OpenVINOBackend(exported[0] / "lsanet_x4_fp32.onnx") as backend:
            outputs.append(backend.infer(tile))
    assert any((tmp_path / "openvino").iterdir())
    assert np.array_equal(outputs[0], outputs[1])
    with OpenVINOBackend(exported[0] / "lsanet_x4_fp32.onnx", cache=False) as backend:
        assert np.array_equal(backend.infer(tile), outputs[0])


def test_openvino_bf16_runs_only_where_the_cpu_computes_it(exported) -> None:
    backend = OpenVINOBackend(exported[0] / "lsanet_x4_fp32.onnx", "bf16")
    if cpu_has_bf16():
        with backend:
            assert backend.describe() == "openvino (bf16)"
    else:  # OpenVINO would silently compute FP32 under a bf16 label
        with pytest.raises(BackendError, match="no bfloat16 arithmetic"):
            backend.activate()
    with pytest.raises(BackendError, match="fp32 or bf16"):
        OpenVINOBackend(exported[0] / "lsanet_x4_fp32.onnx", "fp16")
