"""Reading the manifest export.py writes: the runtime's source for its default model (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

from export.errors import DeployError

MANIFEST = "manifest.json"
STEM = "lsanet_x4"


def onnx_file(precision: str) -> str:
    """The name export.py gives the ONNX graph of this precision."""
    return f"{STEM}_{precision}.onnx"


def engine_file(precision: str, flavor: str) -> str:
    """The name export.py gives an engine (its sidecar is the same name with .json)."""
    return f"{STEM}_{precision}.{flavor}.engine"


def load_manifest(out_dir: Path) -> dict:
    """The manifest in `out_dir`, checked against the files it lists."""
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"{path}: no manifest; run export.py first") from None
    except ValueError as exc:
        raise DeployError(f"{path}: not a valid manifest ({exc})") from None
    for artifact in manifest.get("artifacts", []):
        if not (path.parent / artifact["file"]).is_file():
            raise DeployError(f"{path}: lists {artifact['file']}, which is missing; re-run export.py")
    return manifest


def artifact_path(out_dir: Path, manifest: dict, **match: str) -> Path | None:
    """The first artifact whose fields equal `match` (e.g. kind="onnx", precision="fp16"), or None."""
    for artifact in manifest.get("artifacts", []):
        if all(artifact.get(k) == v for k, v in match.items()):
            return Path(out_dir) / artifact["file"]
    return None
