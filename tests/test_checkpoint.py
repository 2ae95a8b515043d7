"""Checkpoint loading: every accepted layout loads strictly; every failure names the file and the cause."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from export.checkpoint import CheckpointError, load_checkpoint
from export.model import LSANet
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def public_state(weights_path: Path) -> dict:
    return torch.load(weights_path, map_location="cpu", weights_only=True)


def equal_models(a: LSANet, b: LSANet) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_prefers_params_ema_and_key_overrides(tmp_path: Path, public_state: dict) -> None:
    marked = {k: v.clone() for k, v in public_state["params_ema"].items()}
    marked["c1.bias"].fill_(7.0)
    path = tmp_path / "two.pth"
    torch.save({"params": public_state["params_ema"], "params_ema": marked}, path)
    assert load_checkpoint(path).c1.bias[0].item() == 7.0
    assert load_checkpoint(path, key="params").c1.bias[0].item() != 7.0


@pytest.mark.parametrize("layout", ["bare", "state_dict", "module-prefix", "safetensors"])
def test_other_layouts_load_the_same_network(tmp_path: Path, public_model: LSANet, layout: str) -> None:
    state = public_model.state_dict()
    path = tmp_path / ("m.safetensors" if layout == "safetensors" else "m.pth")
    if layout == "bare":
        torch.save(state, path)
    elif layout == "state_dict":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif layout == "module-prefix":
        torch.save({"module." + k: v for k, v in state.items()}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert equal_models(load_checkpoint(path), public_model)


def test_training_form_is_detected_from_keys(tmp_path: Path) -> None:
    model = LSANet(deploy=False)
    path = tmp_path / "train.pt"
    torch.save({"params_ema": model.state_dict()}, path)
    loaded = load_checkpoint(path)
    assert not loaded.deploy
    assert equal_models(loaded, model)


def write_truncated(path: Path, weights: Path) -> None:
    path.write_bytes(weights.read_bytes()[:5000])


def write_text(path: Path, _weights: Path) -> None:
    path.write_text("this is not a checkpoint\n")


class RunsCode:
    """Unpickling this would call os.system: the loader must refuse it without running it."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def write_code_pickle(path: Path, _weights: Path) -> None:
    torch.save({"params_ema": RunsCode()}, path)


def write_raw_code_pickle(path: Path, _weights: Path) -> None:
    with path.open("wb") as f:
        pickle.dump(RunsCode(), f, protocol=2)


def write_renamed_key(path: Path, weights: Path) -> None:
    state = dict(torch.load(weights, weights_only=True)["params_ema"])
    state["fea_conv.kernel"] = state.pop("fea_conv.weight")
    torch.save(state, path)


def write_wrong_shape(path: Path, weights: Path) -> None:
    state = dict(torch.load(weights, weights_only=True)["params_ema"])
    state["c1.weight"] = torch.zeros(36, 200, 1, 1)
    torch.save(state, path)


def write_other_network(path: Path, _weights: Path) -> None:
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)


def write_not_a_dict(path: Path, _weights: Path) -> None:
    torch.save([torch.zeros(3)], path)


def write_bad_safetensors(path: Path, _weights: Path) -> None:
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")


@pytest.mark.parametrize(
    ("writer", "name", "cause"),
    [
        (write_truncated, "cut.pth", "not a PyTorch checkpoint, or truncated"),
        (write_text, "notes.pth", "not a PyTorch checkpoint, or truncated"),
        (write_code_pickle, "evil.pth", r"pickle the safe loader refuses.*system.*nothing was executed"),
        (write_raw_code_pickle, "evil_raw.pth", r"pickle the safe loader refuses.*system.*nothing was executed"),
        (write_renamed_key, "renamed.pth", r"missing keys: fea_conv.weight; unexpected keys: fea_conv.kernel"),
        (write_wrong_shape, "shape.pth", r"shape mismatch for c1.weight: expected \(36, 216, 1, 1\), got \(36, 200"),
        (write_other_network, "linear.pth", r"a checkpoint of a different network.*weight"),
        (write_not_a_dict, "list.pth", r"not a checkpoint \(holds a list"),
        (write_bad_safetensors, "bad.safetensors", "not a readable safetensors file"),
    ],
)
def test_malformed_files_give_clear_errors(
    tmp_path: Path, monkeypatch, weights_path: Path, writer, name: str, cause: str
) -> None:
    path = tmp_path / name
    writer(path, weights_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=cause) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(str(path))
    assert not (tmp_path / "PWNED").exists()


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_unknown_key_lists_what_is_there(weights_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no state_dict under key 'ema' \(found: params_ema, params\)"):
        load_checkpoint(weights_path, key="ema")


def run_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "export.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # counts the MACs of both forms by tracing them (~10 s)
def test_summary_reports_both_forms(weights_path: Path) -> None:
    result = run_export("--ckpt", str(weights_path), "--summary")
    assert result.returncode == 0, result.stderr
    assert "325,116 parameters" in result.stdout and "138,492 parameters" in result.stdout
    assert "8.21 G MACs" in result.stdout and "18.41 G counting nn.Conv2d modules only" in result.stdout


def test_cli_failure_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_text("nope")
    result = run_export("--ckpt", str(bad), "--summary")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert str(bad) in result.stderr
