"""The reliability promises, each tried the way a hostile user would: real files, real models, real signals.
Nothing is lost, nothing silently wrong is written, every failure is one line.

Most promises are kept by the library, so they are tried by calling it (upscale.py's own run in this process:
tests/conftest.py upscale_here; or the part that keeps the promise). A subprocess is started only where the
process is the point: signals, exit codes, and the one-line error contract end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from core.errors import BackendError, DeployError
from core.files import sha256_file
from runtime import Upscaler
from runtime.jobs.plan import make_output_folder
from runtime.jobs.step import commit, prepare
from runtime.model.source import resolve_model
from tests.conftest import ROOT, assert_one_line_error, run_script, upscale_cli, upscale_here


def photo(seed: int, shape: tuple[int, int] = (24, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def message_of(error: BaseException) -> str:
    """The error's message, checked to be one line (what the commands print after `error: `)."""
    assert "\n" not in str(error), str(error)
    return str(error)


# 1. An unquoted glob (`--overwrite dir/*`) names a photo as OUTPUT: it must survive.
def test_overwrite_never_replaces_a_file_that_is_not_an_earlier_result(tmp_path, exported, capfd) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), photo(1))
    cv2.imwrite(str(tmp_path / "b.png"), photo(2))
    cv2.imwrite(str(tmp_path / "c.png"), photo(3, (96, 80)))  # a photo that happens to be exactly 4x a.png
    before = snapshot(tmp_path)
    for victim in ("b.png", "c.png"):
        result = upscale_here(capfd, tmp_path / "a.png", tmp_path / victim, engines_dir=exported[0], overwrite=True)
        assert_one_line_error(result, victim, "not an earlier x4 result")
    assert snapshot(tmp_path) == before
    # The same size check lets a genuine re-run replace its own earlier result.
    assert upscale_here(capfd, tmp_path / "a.png", tmp_path / "a_x4.png", engines_dir=exported[0]).returncode == 0
    first = (tmp_path / "a_x4.png").stat().st_mtime_ns
    result = upscale_here(capfd, tmp_path / "a.png", tmp_path / "a_x4.png", engines_dir=exported[0], overwrite=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a_x4.png").stat().st_mtime_ns >= first


# 2. Two inputs that would write one output name: refused before any work.
def test_two_inputs_one_output_name_is_refused_before_any_work(tmp_path, exported, capfd) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), photo(1))
    cv2.imwrite(str(folder / "a.png"), photo(2))
    result = upscale_here(capfd, folder, tmp_path / "out", engines_dir=exported[0], ext="png")
    assert_one_line_error(result, "a.jpg", "a.png", "would both write")
    assert "model:" not in result.stderr  # refused before a model was even loaded
    assert not (tmp_path / "out").exists()


def _start_upscale(exported, *args: str) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "upscale.py"), *args, "--engines-dir", str(exported[0]), "--quiet"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if predicate():
            return True
        time.sleep(0.001)
    return False


# 3. SIGTERM (and SIGHUP) while the output is being encoded: no temporary left, no output, exit 128 + signal.
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_while_writing_leaves_no_temporary(tmp_path, exported, signum) -> None:
    cv2.imwrite(str(tmp_path / "big.png"), photo(3, (600, 600)))  # a 2400x2400 PNG takes a while to encode
    out = tmp_path / "out"
    out.mkdir()
    process = _start_upscale(exported, str(tmp_path / "big.png"), str(out / "big_x4.png"))
    caught = _wait_for(lambda: any(out.iterdir()), process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert caught, "the temporary file never appeared"
    assert process.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr
    # Nothing, or (when the signal came just as the file was committed) the complete result; never a temporary.
    left = list(out.iterdir())
    assert left == [] or (left == [out / "big_x4.png"] and cv2.imread(str(left[0])).shape == (2400, 2400, 3)), left


def test_a_temporary_left_by_a_killed_run_is_never_an_input(tmp_path, exported, capfd) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), photo(1))
    shutil.copy(folder / "a.png", folder / ".a_x4.k3j9a.part.png")  # what SIGKILL could leave behind
    result = upscale_here(capfd, folder, engines_dir=exported[0])
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stderr and "temporary file of an interrupted run" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".a_x4.k3j9a.part.png", "a.png", "a_x4.png"]


@pytest.mark.slow  # a real export, interrupted once its staging folder appears (after the parity gate)
def test_export_sigterm_leaves_no_staging_folder(tmp_path, weights_path) -> None:
    out = tmp_path / "engines"
    command = [sys.executable, str(ROOT / "export.py"), "--ckpt", str(weights_path), "--out", str(out)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    caught = _wait_for(lambda: out.is_dir() and any(p.name.startswith(".staging-") for p in out.iterdir()), process)
    if not caught:  # the staging folder appears after the parity gate: interrupt during the gate instead
        pytest.fail("export finished before a staging folder was seen")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []


# 4. Two concurrent runs writing the same output: exactly one result, the other says why it did not write.
# Two processes race nondeterministically; here the race's worst interleaving is made on purpose: both runs
# check the target (nothing there) before either commits.
def test_concurrent_runs_never_replace_each_other(tmp_path, exported) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), photo(1, (120, 120)))
    cv2.imwrite(str(tmp_path / "b.png"), photo(2, (120, 120)))
    target = tmp_path / "out.png"
    with Upscaler(engines_dir=exported[0]) as upscaler:
        checked = [prepare(tmp_path / name, target, False, {(tmp_path / name).resolve()}, upscaler.max_pixels) for name in ("a.png", "b.png")]
        results = [(upscaler.upscale_image(prepared.image), prepared.replace) for prepared in checked]
    commit(target, *results[0])
    written = target.read_bytes()
    with pytest.raises(DeployError, match="appeared while this run was working") as loser:
        commit(target, *results[1])
    message_of(loser.value)
    assert target.read_bytes() == written and cv2.imread(str(target)).shape == (480, 480, 3)
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []


# 9. Tampered or wrong models.
def _copy_export(exported, tmp_path: Path) -> Path:
    folder = tmp_path / "engines"
    shutil.copytree(exported[0], folder)
    return folder


def _negate_first_conv(path: Path, index: int = 0) -> None:
    model = onnx.load(str(path))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][index]
    weights = next(t for t in model.graph.initializer if t.name == conv.input[1])
    weights.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weights), weights.name))
    onnx.save(model, str(path))


def _rehash(folder: Path, name: str) -> None:
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for artifact in manifest["artifacts"]:
        if artifact["file"] == name:
            artifact["sha256"] = sha256_file(folder / name)
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "in.png"
    cv2.imwrite(str(path), photo(4))
    return path


def test_tampered_onnx_with_matching_sha256_fails_its_self_check_and_auto_moves_on(tmp_path, source, exported, capfd) -> None:
    folder = _copy_export(exported, tmp_path)
    _negate_first_conv(folder / "lsanet_x4_fp32.onnx")
    _rehash(folder, "lsanet_x4_fp32.onnx")
    explicit = upscale_here(capfd, source, tmp_path / "out.png", engines_dir=folder, backend="onnxruntime")
    assert_one_line_error(explicit, "self-check failed", "differs from the exported FP32 reference")
    assert not (tmp_path / "out.png").exists()
    auto = upscale_here(capfd, source, tmp_path / "out.png", engines_dir=folder)
    assert auto.returncode == 0, auto.stderr
    # OpenVINO and ONNX Runtime CPU run the tampered graph and are refused; the checkpoint (found through the
    # manifest, sha256 verified) still runs through PyTorch.
    assert "backend: torch" in auto.stderr
    assert "skipped openvino: self-check failed" in auto.stderr


def test_byte_flip_in_an_artifact_is_refused(tmp_path, exported) -> None:
    folder = _copy_export(exported, tmp_path)
    data = bytearray((folder / "lsanet_x4_fp16.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "lsanet_x4_fp16.onnx").write_bytes(bytes(data))
    with pytest.raises(DeployError, match=r"lsanet_x4_fp16\.onnx: sha256 differs") as error:
        resolve_model(engines_dir=folder)
    message_of(error.value)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/x.onnx", ".."])
def test_manifest_paths_outside_the_folder_are_refused(tmp_path, exported, name) -> None:
    folder = _copy_export(exported, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"][0]["file"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match="not a plain file name .* refusing to follow it") as error:
        resolve_model(engines_dir=folder)
    message_of(error.value)


def test_an_onnx_that_is_not_x4_is_refused(tmp_path, source) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["lr"], ["sr"])], "identity",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, None, None])],
    )  # fmt: skip
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(BackendError, match="self-check failed.*not an x4 RGB model") as error, Upscaler(onnx=path) as up:
        up.upscale_file(source, tmp_path / "out.png")
    message_of(error.value)
    assert not (tmp_path / "out.png").exists()


def test_a_bare_onnx_with_a_broken_layer_fails_the_plausibility_check(tmp_path, source, exported) -> None:
    path = tmp_path / "broken.onnx"
    shutil.copy(exported[0] / "lsanet_x4_fp32.onnx", path)
    _negate_first_conv(path)
    with pytest.raises(BackendError, match="self-check failed.*not a working x4 model") as error, Upscaler(onnx=path) as up:
        up.upscale_file(source, tmp_path / "out.png")
    message_of(error.value)
    assert not (tmp_path / "out.png").exists()
    with Upscaler(onnx=exported[0] / "lsanet_x4_fp32.onnx") as up:
        up.upscale_file(source, tmp_path / "out.png")
    assert cv2.imread(str(tmp_path / "out.png")).shape == (96, 80, 3)


def test_an_onnx_with_its_checkpoint_is_held_to_the_pytorch_reference(tmp_path, source, exported, weights_path) -> None:
    path = tmp_path / "subtle.onnx"
    shutil.copy(exported[0] / "lsanet_x4_fp32.onnx", path)
    _negate_first_conv(path, index=40)  # a late convolution: the output still looks like a plausible x4
    with Upscaler(onnx=path, backend="onnxruntime") as up:  # alone: only plausibility to go by
        up.upscale_file(source, tmp_path / "out.png")
    (tmp_path / "out.png").unlink()
    with pytest.raises(BackendError, match="self-check failed.*differs from the exported FP32 reference") as error:
        with Upscaler(onnx=path, ckpt=weights_path, backend="onnxruntime") as up:
            up.upscale_file(source, tmp_path / "out.png")
    message_of(error.value)
    assert not (tmp_path / "out.png").exists()


# 10. Every failure one line.
BROKEN_MANIFESTS = {
    "empty": "{}", "list": "[]", "null": "null", "no-artifacts": '{"format": 1}',
    "format-true": '{"format": true, "artifacts": [], "checkpoint": {}}',
    "empty-artifact": '{"format": 1, "artifacts": [{}], "checkpoint": {}}',
    "deep": "[" * 100_000 + "]" * 100_000, "binary": "\x00\xff",
}  # fmt: skip


@pytest.mark.parametrize("content", BROKEN_MANIFESTS.values(), ids=BROKEN_MANIFESTS.keys())
def test_broken_manifests_are_one_line_errors(tmp_path, content) -> None:
    folder = tmp_path / "engines"
    folder.mkdir()
    (folder / "manifest.json").write_text(content, errors="surrogateescape")
    with pytest.raises(DeployError, match="manifest.json") as error:
        resolve_model(engines_dir=folder)
    message_of(error.value)
    if content.startswith('{"format": true'):  # true == 1 in Python: refused as a format, not found wanting later
        assert "not a manifest of format 1" in str(error.value)


def test_a_broken_manifest_is_one_line_on_stderr_and_exit_1(tmp_path, source) -> None:
    """The contract end to end, in a fresh interpreter with its default recursion limit: a manifest nested
    100 000 deep is `error: ...` and exit 1, not a RecursionError's traceback."""
    folder = tmp_path / "engines"
    folder.mkdir()
    (folder / "manifest.json").write_text(BROKEN_MANIFESTS["deep"])
    result = run_script("upscale.py", str(source), str(tmp_path / "out.png"), "--engines-dir", str(folder))
    assert_one_line_error(result, "manifest.json")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("content", [b"", b"\x08\x01\x12" + os.urandom(64), None], ids=["empty", "random", "truncated"])
def test_broken_onnx_files_are_one_line_errors(tmp_path, exported, content) -> None:
    path = tmp_path / "model.onnx"
    if content is None:
        content = (exported[0] / "lsanet_x4_fp32.onnx").read_bytes()[:5000]
    path.write_bytes(content)
    with pytest.raises(DeployError, match="model.onnx") as error, Upscaler(onnx=path):
        pass
    message_of(error.value)


def test_output_folder_that_cannot_be_made(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    for folder in (tmp_path / "file" / "out", Path("/proc/lsanet-out")):  # /proc: nobody may create folders there
        with pytest.raises(DeployError, match="cannot create or write there") as error:
            make_output_folder(folder, single=False)
        assert str(folder) in message_of(error.value)


def test_the_output_folder_is_made_only_for_a_run_that_goes_ahead(tmp_path, exported, capfd) -> None:
    """upscale.py makes a folder OUTPUT itself, after the model loaded: a run refused earlier leaves none."""
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), photo(1))
    cv2.imwrite(str(folder / "b.png"), photo(2))
    (tmp_path / "file").write_text("x")
    result = upscale_here(capfd, folder, tmp_path / "file" / "out", engines_dir=exported[0])
    assert_one_line_error(result, "cannot create or write there")
    refused = upscale_here(capfd, folder, tmp_path / "new" / "out", engines_dir=exported[0], backend="tensorrt")
    assert_one_line_error(refused, "backend tensorrt cannot run")
    assert not (tmp_path / "new").exists()
    assert upscale_here(capfd, folder, tmp_path / "new" / "out", engines_dir=exported[0]).returncode == 0
    assert sorted(p.name for p in (tmp_path / "new" / "out").iterdir()) == ["a_x4.png", "b_x4.png"]


def test_unknown_output_formats_fail_before_any_model_loads(tmp_path, source, capfd) -> None:
    # No model anywhere: the run must fail on the format before it looks for one.
    nowhere = tmp_path / "no-export"
    result = upscale_here(capfd, source, tmp_path / "out", engines_dir=nowhere, ext="xyz")
    assert_one_line_error(result, "--ext xyz", "cannot write that format")
    result = upscale_here(capfd, source, tmp_path / "out", engines_dir=nowhere)
    assert_one_line_error(result, "unknown output format")
    assert "model:" not in result.stderr and "no manifest" not in result.stderr


def test_export_refuses_bad_output_folders_in_one_line(tmp_path, weights_path, capfd) -> None:
    from export.command import main

    (tmp_path / "file").write_text("x")
    for out, needle in ((tmp_path / "file", "is a file"), (Path("/proc/lsanet-engines"), "cannot create or write there")):
        capfd.readouterr()
        code = main(["--ckpt", str(weights_path), "--out", str(out), "--flavor", "none"])
        err = capfd.readouterr().err
        assert_one_line_error(subprocess.CompletedProcess([], code, "", err), str(out), needle)


def test_export_usage_errors_exit_2_without_a_traceback(weights_path) -> None:
    result = run_script("export.py", "--ckpt", str(weights_path), "--workspace-mib", "-1")
    assert result.returncode == 2 and "must be >= 1" in result.stderr and "Traceback" not in result.stderr


# 11-12. Images too large: refused from the header, quickly; --tile 0 planned from memory (tests/test_memory.py).
@pytest.mark.slow  # the real network on a 700x900 image in one pass
def test_tile_zero_runs_without_out_of_memory_retries(tmp_path, exported, capfd) -> None:
    cv2.imwrite(str(tmp_path / "in.png"), photo(5, (700, 900)))
    result = upscale_here(capfd, tmp_path / "in.png", tmp_path / "out.png", engines_dir=exported[0], tile=0)
    assert result.returncode == 0, result.stderr
    assert "out of memory" not in result.stderr and "retrying" not in result.stderr
    assert cv2.imread(str(tmp_path / "out.png")).shape == (2800, 3600, 3)


@pytest.mark.parametrize("sidecar", ["[]", "null", '{"flavor": "rtx", "precision": "fp16"}'], ids=["list", "null", "no-profile"])
def test_malformed_engine_sidecars_are_one_line_errors(tmp_path, exported, sidecar) -> None:
    engine = tmp_path / "e.engine"
    shutil.copy(exported[0] / "lsanet_x4_fp16.rtx.engine", engine)
    (tmp_path / "e.json").write_text(sidecar)
    with pytest.raises(DeployError, match=r"e\.engine: sidecar e\.json") as error:
        resolve_model(engine=engine)
    message_of(error.value)


def test_canary_bypasses_are_refused(tmp_path, source, exported) -> None:
    """A reference of NaN would pass every comparison, and a manifest without a canary would fall back to
    the weaker plausibility check: both are refused, not run."""
    folder = _copy_export(exported, tmp_path)
    with np.load(folder / "lsanet_x4_canary.npz") as canary:
        inputs, reference = canary["input"], canary["output"]
    np.savez(folder / "lsanet_x4_canary.npz", input=inputs, output=np.full_like(reference, np.nan))
    _rehash(folder, "lsanet_x4_canary.npz")
    with pytest.raises(BackendError, match=r"not a canary file \(NaN or Inf values\)") as error:
        with Upscaler(engines_dir=folder, backend="onnxruntime") as up:
            up.upscale_file(source, tmp_path / "out.png")
    message_of(error.value)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["kind"] != "canary"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match="lists no self-check canary") as error:
        with Upscaler(engines_dir=folder, backend="onnxruntime") as up:
            up.upscale_file(source, tmp_path / "out.png")
    message_of(error.value)
    assert not (tmp_path / "out.png").exists()


def test_file_names_that_are_not_utf8_or_hold_control_characters(tmp_path, exported) -> None:
    """OpenCV crashed on a name that is not valid UTF-8; a newline or escape in a name must not split or
    forge an error line. A subprocess: a crash must fail this test, not the test run, and the error line is
    checked as the terminal gets it."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = cv2.imencode(".png", photo(1))[1].tobytes()
    (Path(os.fsdecode(bytes(folder) + b"/bad\xffname.png"))).write_bytes(good)
    (folder / "evil\nerror: forged\x1b[2J.png").write_bytes(b"not an image")
    result = upscale_cli(exported, str(folder), str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr
    assert "1 written, 1 failed" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "evil\\nerror: forged\\x1b[2J.png" in errors[0], result.stderr
    written = np.fromfile(next((tmp_path / "out").iterdir()), np.uint8)  # cv2.imread(name) would crash here
    assert cv2.imdecode(written, cv2.IMREAD_COLOR).shape == (96, 80, 3)
