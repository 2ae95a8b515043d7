"""Load an LSANet checkpoint safely (no pickled code is ever run) and strictly.

Accepted: `.pth`/`.pt` (torch zip or legacy pickle, read with weights_only=True) and `.safetensors`;
layouts {"params_ema", "params"}, {"state_dict": ...} or a bare state_dict, optionally with `module.` prefixes;
the training form (six-branch RCBs) or the deployed form, told apart by the keys.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from core.errors import DeployError, first_line
from export.model import LSANet

NESTED_KEYS = ("params_ema", "params")
TRAINING_MARKER = ".rbr_3x3_branch."


class CheckpointError(DeployError):
    """A checkpoint that cannot be used; the message names the file and the cause."""

    def __init__(self, path: Path, cause: str) -> None:
        super().__init__(f"{path}: {cause}")


def _read_tensors(path: Path) -> object:
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(path, f"not a readable safetensors file ({first_line(exc)})") from None
    try:
        with warnings.catch_warnings():
            # The public checkpoint uses pickle protocol 4, which the weights-only unpickler reads fine.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" in message:
            found = re.search(r"GLOBAL (\S+)", message) or re.search(r"(Unsupported [^\n]+)", message)
            detail = found.group(1) if found else "not plain tensors"
            raise CheckpointError(
                path, f"a pickle the safe loader refuses, it would need code to load ({detail}); nothing was executed"
            ) from None
        raise CheckpointError(path, f"not a checkpoint ({first_line(exc)})") from None
    except Exception as exc:  # the weights-only unpickler fails on garbage with arbitrary error types
        raise CheckpointError(path, f"not a PyTorch checkpoint, or truncated ({type(exc).__name__}: {first_line(exc)})") from None


def _select_state_dict(path: Path, obj: object, key: str | None) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"not a checkpoint (holds a {type(obj).__name__}, not a dict of tensors)")
    nested = [k for k in NESTED_KEYS if isinstance(obj.get(k), Mapping)]
    if key is not None:
        if not isinstance(obj.get(key), Mapping):
            found = ", ".join(nested) or "none"
            raise CheckpointError(path, f"no state_dict under key '{key}' (found: {found})")
        obj = obj[key]
    elif nested:
        obj = obj[nested[0]]
    elif isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(path, "not a checkpoint (no tensors found)")
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def _sample(names: list[str], n: int = 4) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _check_keys(path: Path, state: dict[str, torch.Tensor], model: LSANet) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if len(missing) == len(expected):
        raise CheckpointError(
            path, f"a checkpoint of a different network: none of LSANet's keys found (it has {_sample(list(state))})"
        )
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_sample(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_sample(unexpected)}")
        raise CheckpointError(path, "; ".join(parts))
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise CheckpointError(
                path, f"shape mismatch for {name}: expected {tuple(tensor.shape)}, got {tuple(state[name].shape)}"
            )


def load_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read the LSANet state_dict out of a checkpoint file, without building a network."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if not path.is_file():
        raise CheckpointError(path, "not a file")
    return _select_state_dict(path, _read_tensors(path), key)


def load_checkpoint(path: str | Path, key: str | None = None) -> LSANet:
    """Load a checkpoint into an LSANet of the form its keys show, strictly, in eval mode (float32)."""
    path = Path(path)
    state = load_state_dict(path, key)
    model = LSANet(deploy=not any(TRAINING_MARKER in k for k in state))
    _check_keys(path, state, model)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()
