"""The artifact contract between export.py and the runtime, with no torch and no TensorRT: file names, the
manifest, engine flavours and sidecars, and the checks the runtime makes before it loads anything.

Every file the manifest lists is checked by name (a plain name inside the manifest's folder, never a
path) and by sha256 before anything is loaded: a damaged or swapped artifact is refused, not run. An
engine's sidecar must describe that very file (its sha256) before the engine is deserialized.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import DeployError
from core.files import sha256_file

MANIFEST = "manifest.json"
# Engine flavours: their name in the manifest and on the command line, and the Python module that builds and
# runs them. TensorRT-RTX's default targets are its own default (Ampere, Ada, Blackwell consumer GPUs).
MODULES = {"rtx": "tensorrt_rtx", "tensorrt": "tensorrt"}
RTX_DEFAULT_TARGETS = ("SM86", "SM89", "SM120")
FORMAT = 1
STEM = "lsanet_x4"


def onnx_file(precision: str) -> str:
    """The name export.py gives the ONNX graph of this precision."""
    return f"{STEM}_{precision}.onnx"


def engine_file(precision: str, flavor: str) -> str:
    """The name export.py gives an engine (its sidecar is the same name with .json)."""
    return f"{STEM}_{precision}.{flavor}.engine"


class SidecarError(DeployError):
    """An engine's sidecar is missing, unreadable, or describes another file."""


# What to do about an engine that does not match its sidecar, or cannot run here.
REBUILD = "rebuild it with: python export.py --ckpt CHECKPOINT --fp16"


def read_sidecar(engine: Path) -> dict:
    """The engine's JSON sidecar (`<engine>.json`), checked to belong to this very file."""
    path = engine.with_suffix(".json")
    try:
        sidecar = json.loads(path.read_text())
    except FileNotFoundError:
        raise SidecarError(f"{engine}: no sidecar {path.name}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise SidecarError(f"{engine}: sidecar {path.name} is not readable JSON") from None
    if not isinstance(sidecar, dict) or not all(isinstance(sidecar.get(k), str) for k in ("flavor", "precision")):
        raise SidecarError(f"{engine}: sidecar {path.name} is not an engine sidecar written by export.py")
    if not isinstance(sidecar.get("profile"), dict) or not sidecar["profile"]:
        raise SidecarError(f"{engine}: sidecar {path.name} has no optimisation profile")
    if not engine.is_file() or sidecar.get("engine_sha256") != sha256_file(engine):
        raise SidecarError(f"{engine}: the file does not match its sidecar (sha256 differs)")
    return sidecar


def _check_entry(path: Path, artifact: object) -> None:
    """One entry of the manifest's artifact list: well formed, and a plain file name inside the folder."""
    if not isinstance(artifact, dict) or not all(isinstance(artifact.get(k), str) for k in ("file", "kind", "sha256")):
        raise DeployError(f"{path}: an artifact entry lacks file/kind/sha256; re-run export.py")
    name = artifact["file"]
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise DeployError(f"{path}: artifact '{name}' is not a plain file name in {path.parent}; refusing to follow it")


def _check_file(path: Path, artifact: dict) -> None:
    """The file an entry names: present, and with the sha256 the manifest recorded."""
    name = artifact["file"]
    file = path.parent / name
    if not file.is_file():
        raise DeployError(f"{path}: lists {name}, which is missing; re-run export.py")
    if sha256_file(file) != artifact["sha256"]:
        raise DeployError(f"{file}: sha256 differs from {path.name} (changed or damaged since export); re-run export.py")


def read_manifest(out_dir: Path) -> dict:
    """The manifest in `out_dir` as export.py writes it (its structure checked, not the files it lists)."""
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"{path}: no manifest; run export.py first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path}: cannot read ({exc})") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise DeployError(f"{path}: not a valid manifest ({type(exc).__name__}: {str(exc)[:100]})") from None
    # `type(...) is int`: a bool is an int in Python, and `"format": true` must not pass for format 1.
    if not isinstance(manifest, dict) or type(manifest.get("format")) is not int or manifest["format"] != FORMAT:
        raise DeployError(f"{path}: not a manifest of format {FORMAT} written by export.py; re-run export.py")
    artifacts, checkpoint = manifest.get("artifacts"), manifest.get("checkpoint")
    if not isinstance(artifacts, list) or not isinstance(checkpoint, dict):
        raise DeployError(f"{path}: lacks its artifact list or checkpoint entry; re-run export.py")
    for artifact in artifacts:
        _check_entry(path, artifact)
    return manifest


def load_manifest(out_dir: Path) -> dict:
    """The manifest in `out_dir`, checked: its structure, and every file it lists by name and sha256."""
    manifest = read_manifest(out_dir)
    for artifact in manifest["artifacts"]:
        _check_file(Path(out_dir) / MANIFEST, artifact)
    return manifest


def artifact_path(out_dir: Path, manifest: dict, **match: str) -> Path | None:
    """The first artifact whose fields equal `match` (e.g. kind="onnx", precision="fp16"), or None."""
    for artifact in manifest.get("artifacts", []):
        if all(artifact.get(k) == v for k, v in match.items()):
            return Path(out_dir) / artifact["file"]
    return None
