"""upscale.py on real files: quality per backend through the command itself (a subprocess, as a user runs it),
formats and every bad input through its library run in this process (tests/conftest.py upscale_here)."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.metrics import psnr, y_psnr
from runtime.model.fetch import FetchError, fetch_checkpoint
from tests.conftest import ROOT, assert_one_line_error, read_rgb, upscale_cli, upscale_here
from tests.test_imageio import jpeg_with_orientation
from tests.test_model import SET5_REFERENCE_Y


@pytest.fixture(scope="module")
def set5_lr(tmp_path_factory, set5) -> Path:
    folder = tmp_path_factory.mktemp("set5")
    for name, lr, _ in set5:
        cv2.imwrite(str(folder / name), lr[..., ::-1])
    return folder


@pytest.fixture(scope="module")
def backend_outputs(tmp_path_factory, exported, set5_lr, weights_path) -> dict[str, Path]:
    """Set5 upscaled by upscale.py with each CPU backend (auto = OpenVINO here), FP32 and FP16."""
    outputs = {}
    for label, args in {
        "auto": [],
        "onnxruntime": ["--backend", "onnxruntime"],
        "onnxruntime-fp16": ["--backend", "onnxruntime", "--fp16"],
        "torch": ["--backend", "torch", "--ckpt", str(weights_path)],
    }.items():
        out = tmp_path_factory.mktemp(label)
        result = upscale_cli(exported, str(set5_lr), str(out), *args)
        assert result.returncode == 0, result.stderr
        outputs[label] = out
    return outputs


@pytest.mark.parametrize("label", ["auto", "onnxruntime", "torch"])
def test_set5_reference_figures_through_the_cli(backend_outputs, set5, label) -> None:
    for name, _, hr in set5:
        sr = read_rgb(backend_outputs[label] / name.replace(".png", "_x4.png"))
        assert abs(y_psnr(sr, hr) - SET5_REFERENCE_Y[name]) <= 0.01, (label, name)


def test_backends_agree_on_the_written_files(backend_outputs, set5) -> None:
    for name, _, _ in set5:
        file = name.replace(".png", "_x4.png")
        reference = read_rgb(backend_outputs["torch"] / file).astype(int)
        for label in ("auto", "onnxruntime"):
            # FP32 backends: the same float32 maths, at most one 8-bit rounding step apart.
            assert np.abs(read_rgb(backend_outputs[label] / file).astype(int) - reference).max() <= 1, (label, name)
        fp16 = read_rgb(backend_outputs["onnxruntime-fp16"] / file).astype(int)
        # FP16: the export's bounds (55 dB, 2/255) plus one rounding step on the written 8-bit files.
        assert psnr(fp16, reference, 255.0) >= 55.0 and np.abs(fp16 - reference).max() <= 3, name


@pytest.mark.parametrize("backend", ["auto", "onnxruntime", "torch"])
def test_photos_reproduce_whole_image_quality(tmp_path, exported, photos, public_model, weights_path, backend) -> None:
    import torch

    from export.parity import to_nchw
    from tests.conftest import to_hwc, to_uint8

    for name, lr, _ in photos:
        cv2.imwrite(str(tmp_path / name), lr[..., ::-1])
    extra = ["--ckpt", str(weights_path)] if backend == "torch" else []
    result = upscale_cli(exported, str(tmp_path), str(tmp_path / "out"), "--backend", backend, "--quiet", *extra)
    assert result.returncode == 0 and result.stderr == ""
    for name, lr, hr in photos:
        with torch.no_grad():
            reference = to_uint8(to_hwc(public_model(torch.from_numpy(to_nchw(lr))).numpy()))
        written = read_rgb(tmp_path / "out" / name.replace(".png", "_x4.png"))
        assert abs(y_psnr(written, hr) - y_psnr(reference, hr)) <= 0.01, (backend, name)


def test_the_cpu_path_never_imports_torch(tmp_path, exported) -> None:
    """Start-up time and memory: torch and the ONNX exporter are for the PyTorch backend and checkpoint
    conversion only, TensorRT for a GPU."""
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.full((20, 20, 3), 90, np.uint8))
    code = (
        "import sys, runpy; sys.argv = ['upscale.py', sys.argv[1], sys.argv[2], '--quiet', '--engines-dir', sys.argv[3]]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print([m for m in ('torch', 'onnx', 'onnxscript', 'tensorrt', 'tensorrt_rtx') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code, str(source), str(tmp_path / "out.png"), str(exported[0])],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_formats_round_trip(tmp_path, exported, capfd) -> None:
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "deep.png"), rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16))
    cv2.imwrite(str(tmp_path / "grey.png"), rng.integers(0, 256, (20, 24), dtype=np.uint8))
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    rgba[:, :12, 3] = 0
    rgba[:, 12:, 3] = 255
    cv2.imwrite(str(tmp_path / "cutout.png"), rgba)
    bgr = np.zeros((20, 40, 3), np.uint8)
    bgr[:, :20] = (0, 0, 255)
    (tmp_path / "phone.jpg").write_bytes(jpeg_with_orientation(bgr, 6))
    out = tmp_path / "out"
    result = upscale_here(capfd, tmp_path, out, engines_dir=exported[0])
    assert result.returncode == 0, result.stderr
    deep = cv2.imread(str(out / "deep_x4.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (80, 96, 3)
    assert cv2.imread(str(out / "grey_x4.png"), cv2.IMREAD_UNCHANGED).shape == (80, 96)
    cutout = cv2.imread(str(out / "cutout_x4.png"), cv2.IMREAD_UNCHANGED)
    assert cutout.shape == (80, 96, 4)
    # The network rings slightly at image corners (up to ~10/255 on a flat plane); judge the halves by their means.
    assert cutout[:, :40, 3].mean() < 2 and cutout[:, 56:, 3].mean() > 253
    phone = cv2.imread(str(out / "phone_x4.jpg"), cv2.IMREAD_UNCHANGED)
    assert phone.shape == (160, 80, 3)
    assert phone[20, 40, 2] > 200 and phone[140, 40, 2] < 60  # red on top after the EXIF rotation


def write_bad_and_good(folder: Path) -> None:
    folder.mkdir()
    good = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "a.png"), good)
    cv2.imwrite(str(folder / "c.png"), good)
    (folder / "b.png").write_bytes((folder / "a.png").read_bytes()[:60])


def test_folder_with_a_bad_file_goes_on_and_fails_at_the_end(tmp_path, exported, capfd) -> None:
    write_bad_and_good(tmp_path / "in")
    result = upscale_here(capfd, tmp_path / "in", tmp_path / "out", engines_dir=exported[0])
    assert_one_line_error(result, "b.png", "cannot decode")
    assert "2 written, 1 failed" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "c_x4.png"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"plain text\n", "cannot decode"), (None, "cannot decode")],
    ids=["zero-byte", "text-named-png", "truncated-png"],
)
def test_bad_single_files(tmp_path, exported, capfd, content, message) -> None:
    source = tmp_path / "in.png"
    if content is None:
        _, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        content = png.tobytes()[:300]
    source.write_bytes(content)
    result = upscale_here(capfd, source, tmp_path / "out.png", engines_dir=exported[0])
    assert_one_line_error(result, str(source), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
    assert source.read_bytes() == content


def test_output_equal_to_input_is_refused(tmp_path, exported, capfd) -> None:
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.zeros((20, 20, 3), np.uint8))
    before = source.read_bytes()
    for overwrite in (False, True):
        result = upscale_here(capfd, source, source, engines_dir=exported[0], overwrite=overwrite)
        assert_one_line_error(result, "would overwrite its input")
    assert source.read_bytes() == before


def test_an_existing_output_is_kept_and_replaced_only_if_it_is_an_earlier_result(tmp_path, exported, capfd) -> None:
    source, target = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(source), np.zeros((20, 20, 3), np.uint8))
    assert upscale_here(capfd, source, target, engines_dir=exported[0]).returncode == 0  # an earlier result
    first = target.stat()
    again = upscale_here(capfd, source, target, engines_dir=exported[0])  # a re-run resumes: nothing to redo
    assert again.returncode == 0 and f"0 written, 0 failed, 1 skipped (complete): {target}" in again.stderr
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert upscale_here(capfd, source, target, engines_dir=exported[0], overwrite=True).returncode == 0
    assert target.stat().st_ino != first.st_ino and cv2.imread(str(target)).shape == (80, 80, 3)
    # Files this tool did not make are never replaced: a photo exactly 4x the size, or anything else.
    for other in (cv2.imencode(".png", np.full((80, 80, 3), 200, np.uint8))[1].tobytes(), b"keep me"):
        target.write_bytes(other)
        for overwrite in (False, True):
            result = upscale_here(capfd, source, target, engines_dir=exported[0], overwrite=overwrite)
            assert_one_line_error(result, "not an earlier x4 result")
            assert target.read_bytes() == other


def test_unwritable_output_folder(tmp_path, exported, capfd) -> None:
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.zeros((20, 20, 3), np.uint8))
    if os.geteuid() == 0:
        folder = Path("/sys/kernel")  # root ignores permission bits; sysfs refuses new files even to root
    else:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
    result = upscale_here(capfd, source, folder / "out.png", engines_dir=exported[0])
    assert_one_line_error(result, "not writable")
    assert not (folder / "out.png").exists()


def test_rerun_on_a_folder_skips_its_earlier_results(tmp_path, exported, capfd) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((20, 20, 3), np.uint8))
    assert upscale_here(capfd, folder, engines_dir=exported[0]).returncode == 0
    result = upscale_here(capfd, folder, engines_dir=exported[0], overwrite=True)
    assert result.returncode == 0 and "skipping 1 earlier result" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_x4.png"]


def test_missing_input_and_bad_backend_choice(tmp_path, exported, capfd) -> None:
    assert_one_line_error(upscale_here(capfd, tmp_path / "nope.png", engines_dir=exported[0]), "no such file or folder")
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.zeros((20, 20, 3), np.uint8))
    assert_one_line_error(upscale_here(capfd, source, engines_dir=exported[0], backend="tensorrt"), "backend tensorrt cannot run")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def weights_server(weights_path: Path):
    """The shared checkpoint served on 127.0.0.1, as the public URL would serve it."""
    handler = functools.partial(QuietHandler, directory=str(weights_path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{weights_path.name}"
    server.shutdown()
    server.server_close()


def test_fetch_verifies_the_download(tmp_path, monkeypatch, weights_server) -> None:
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FetchError, match=r"has sha256 4a781d3b83a67093\.\.\., expected 0000000000000000"):
        fetch_checkpoint(weights_server, sha256="0" * 64)
    assert not any((tmp_path / "cache").iterdir())
    path = fetch_checkpoint(weights_server)
    assert path.parent == tmp_path / "cache" and path.stat().st_size == 1_173_689
    assert fetch_checkpoint("http://127.0.0.1:9/unreachable.pth") == path  # a verified cached copy: no download
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path / "empty"))
    with pytest.raises(FetchError, match="cannot download"):
        fetch_checkpoint("http://127.0.0.1:9/unreachable.pth")


@pytest.mark.slow  # the fetched checkpoint is exported into the cache first: ONNX and the parity gate, ~20-40 s
def test_upscale_with_nothing_exported_fetches_the_public_checkpoint(tmp_path, weights_server, monkeypatch, capfd) -> None:
    """With no export anywhere the lookup goes, the public checkpoint is downloaded (from the local server
    standing in for its URL), verified, cached, and run. "Anywhere" is made true whatever this machine holds:
    after the README's Run, ./engines and this project's engines/ hold an export, which would be found."""
    from runtime.model import source as model_source

    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.full((20, 20, 3), 128, np.uint8))
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LSANET_WEIGHTS_URL", weights_server)
    nowhere = [tmp_path / "engines", tmp_path / "cache" / "engines"]  # the lookup's places, all empty
    monkeypatch.setattr(model_source, "engines_dirs", lambda: nowhere)
    result = upscale_here(capfd, source, tmp_path / "out.png")
    assert result.returncode == 0, result.stderr
    assert "model: public checkpoint" in result.stderr
    assert (tmp_path / "cache" / "team44_LSANet.pth").is_file() and cv2.imread(str(tmp_path / "out.png")).shape == (80, 80, 3)


def test_the_export_lookup_order(tmp_path, monkeypatch) -> None:
    """Where an export is looked for when none is named: $LSANET_ENGINES, ./engines, this project's engines/,
    the user cache; the first holding a manifest is used (the test above empties exactly these)."""
    from runtime.model.source import engines_dirs

    monkeypatch.setenv("LSANET_ENGINES", str(tmp_path / "mine"))
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path / "cache"))
    found = engines_dirs()
    assert len(found) == 4 and found[:2] == [tmp_path / "mine", Path("engines")] and found[3] == tmp_path / "cache" / "engines"
    monkeypatch.delenv("LSANET_ENGINES")
    assert engines_dirs() == found[1:]


def test_the_lookup_finds_this_projects_export_from_any_folder() -> None:
    from runtime.model.source import engines_dirs

    assert ROOT / "engines" in engines_dirs()
