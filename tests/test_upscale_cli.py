"""upscale.py end to end on real files: quality per backend, formats, and every bad input handled."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.metrics import psnr, y_psnr
from runtime.model.fetch import FetchError, fetch_checkpoint
from tests.conftest import ROOT, assert_one_line_error, read_rgb, upscale_cli
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


def test_formats_round_trip(tmp_path, exported) -> None:
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
    result = upscale_cli(exported, str(tmp_path), str(out))
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


def test_folder_with_a_bad_file_goes_on_and_fails_at_the_end(tmp_path, exported) -> None:
    write_bad_and_good(tmp_path / "in")
    result = upscale_cli(exported, str(tmp_path / "in"), str(tmp_path / "out"))
    assert_one_line_error(result, "b.png", "cannot decode")
    assert "2 written, 1 failed" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "c_x4.png"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"plain text\n", "cannot decode"), (None, "cannot decode")],
    ids=["zero-byte", "text-named-png", "truncated-png"],
)
def test_bad_single_files(tmp_path, exported, content, message) -> None:
    source = tmp_path / "in.png"
    if content is None:
        ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        content = png.tobytes()[:300]
    source.write_bytes(content)
    result = upscale_cli(exported, str(source), str(tmp_path / "out.png"))
    assert_one_line_error(result, str(source), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
    assert source.read_bytes() == content


def test_output_equal_to_input_is_refused(tmp_path, exported) -> None:
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.zeros((20, 20, 3), np.uint8))
    before = source.read_bytes()
    for extra in ([], ["--overwrite"]):
        result = upscale_cli(exported, str(source), str(source), *extra)
        assert_one_line_error(result, "would overwrite its input")
    assert source.read_bytes() == before


def test_existing_output_needs_overwrite(tmp_path, exported) -> None:
    source, target = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(source), np.zeros((20, 20, 3), np.uint8))
    assert upscale_cli(exported, str(source), str(target)).returncode == 0  # an earlier result
    first = target.read_bytes()
    assert_one_line_error(upscale_cli(exported, str(source), str(target)), "exists (use --overwrite")
    assert target.read_bytes() == first
    assert upscale_cli(exported, str(source), str(target), "--overwrite").returncode == 0
    assert cv2.imread(str(target)).shape == (80, 80, 3)
    # Files this tool did not make are never replaced: a photo exactly 4x the size, or anything else.
    for other in (cv2.imencode(".png", np.full((80, 80, 3), 200, np.uint8))[1].tobytes(), b"keep me"):
        target.write_bytes(other)
        assert_one_line_error(upscale_cli(exported, str(source), str(target), "--overwrite"), "not an earlier x4 result")
        assert target.read_bytes() == other


def test_unwritable_output_folder(tmp_path, exported) -> None:
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.zeros((20, 20, 3), np.uint8))
    if os.geteuid() == 0:
        folder = Path("/sys/kernel")  # root ignores permission bits; sysfs refuses new files even to root
    else:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
    result = upscale_cli(exported, str(source), str(folder / "out.png"))
    assert_one_line_error(result, "not writable")
    assert not (folder / "out.png").exists()


def test_rerun_on_a_folder_skips_its_earlier_results(tmp_path, exported) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((20, 20, 3), np.uint8))
    assert upscale_cli(exported, str(folder)).returncode == 0
    result = upscale_cli(exported, str(folder), "--overwrite")
    assert result.returncode == 0 and "skipping 1 earlier result" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_x4.png"]


def test_missing_input_and_bad_backend_choice(tmp_path, exported) -> None:
    assert_one_line_error(upscale_cli(exported, str(tmp_path / "nope.png")), "no such file or folder")
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.zeros((20, 20, 3), np.uint8))
    assert_one_line_error(upscale_cli(exported, str(source), "--backend", "tensorrt"), "backend tensorrt cannot run")


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


def test_upscale_with_nothing_exported_fetches_the_public_checkpoint(tmp_path, weights_server) -> None:
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), np.full((20, 20, 3), 128, np.uint8))
    env = dict(os.environ, LSANET_CACHE=str(tmp_path / "cache"), LSANET_WEIGHTS_URL=weights_server)
    result = subprocess.run([sys.executable, str(ROOT / "upscale.py"), str(source), str(tmp_path / "out.png")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "model: public checkpoint" in result.stderr
    assert (tmp_path / "cache" / "team44_LSANet.pth").is_file() and cv2.imread(str(tmp_path / "out.png")).shape == (80, 80, 3)
    shutil.rmtree(tmp_path / "cache")
