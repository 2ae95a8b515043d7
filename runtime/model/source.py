"""Where the model comes from: --engine, --onnx or --ckpt when given; else the manifest export.py wrote
(the first folder of `engines_dirs()` holding one); else the public checkpoint, fetched into the user cache
and verified. A checkpoint-only model gets its ONNX graphs and canary from the export pipeline, run once
into the user cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.artifacts import (
    MANIFEST,
    REBUILD,
    SidecarError,
    artifact_path,
    load_manifest,
    onnx_file,
    read_sidecar,
)
from core.errors import BackendError, DeployError, first_line
from core.extras import EXPORTER, missing
from core.files import sha256_file
from core.vocabulary import package_version
from runtime.model.fetch import cache_dir, fetch_checkpoint


@dataclass
class Model:
    """The artifacts one model is available as; any may be missing. `canary` holds the FP32 reference output
    every backend is checked against before use (core/canary.py); without it only plausibility is checked."""

    origin: str
    ckpt: Path | None = None
    key: str | None = None
    onnx: dict[str, Path] = field(default_factory=dict)
    engines: dict[str, Path] = field(default_factory=dict)
    canary: Path | None = None


def onnx_precision(path: Path) -> str:
    """'fp16' when the graph's weights are FP16 (its I/O is FP32 either way), else 'fp32'. Read through
    OpenVINO's ONNX frontend (no protobuf parse of the whole file in Python), asked for ONNX alone so that
    a file that is not one is refused in one line, not tried by every frontend."""
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("onnx")
    try:
        if not frontend.supported(str(path)):
            raise DeployError(f"{path}: not an ONNX model (not an ONNX protobuf)")
        model = frontend.convert(frontend.load(str(path)))
    except Exception as exc:  # noqa: BLE001 - OpenVINO's frontend raises its own types (GeneralFailure) for damage
        raise DeployError(f"{path}: not an ONNX model ({first_line(exc)})") from None
    weights = {op.get_output_element_type(0).get_type_name() for op in model.get_ordered_ops() if op.get_type_name() == "Constant"}
    return "fp16" if "f16" in weights else "fp32"


def _from_manifest(folder: Path, origin: str) -> Model:
    """The model export.py wrote into `folder`: every artifact checked by name and sha256 first."""
    manifest = load_manifest(folder)
    model = Model(origin, canary=artifact_path(folder, manifest, kind="canary"))
    if model.canary is None:  # export.py always writes one: without it the self-check could be bypassed
        raise DeployError(f"{folder / MANIFEST}: lists no self-check canary (an older or edited export); re-run export.py")
    for precision in ("fp32", "fp16"):
        if path := artifact_path(folder, manifest, kind="onnx", precision=precision):
            model.onnx[precision] = path
    for artifact in manifest["artifacts"]:
        if artifact["kind"] == "engine":
            model.engines[str(artifact.get("flavor"))] = folder / artifact["file"]
    source = Path(str(manifest["checkpoint"].get("path", "")))
    if source.is_file() and sha256_file(source) == manifest["checkpoint"].get("sha256"):
        model.ckpt = source
        model.key = None if manifest["checkpoint"].get("key") in (None, "auto") else manifest["checkpoint"]["key"]
    return model


def engines_dirs() -> list[Path]:
    """Where an export is looked for when no folder is named, in order: $LSANET_ENGINES, ./engines, this
    project's own engines/ (so upscale.py finds it from any folder), the user cache's engines/."""
    found = [Path(env)] if (env := os.environ.get("LSANET_ENGINES")) else []
    return [*found, Path("engines"), Path(__file__).resolve().parents[2] / "engines", cache_dir() / "engines"]


def engine_sidecar(engine: Path) -> dict:
    """The engine's sidecar, checked to belong to it; a BackendError that says what to rebuild otherwise."""
    try:
        return read_sidecar(engine)
    except SidecarError as exc:
        raise BackendError(f"{exc}; {REBUILD}") from None


def resolve_model(
    ckpt: Path | None = None,
    onnx: Path | None = None,
    engine: Path | None = None,
    engines_dir: Path | None = None,
    key: str | None = None,
) -> Model:
    """The model the user named, else the exported one (`engines_dir`, else the first of `engines_dirs()`
    holding a manifest), else the public checkpoint (downloaded once)."""
    for given, what in ((ckpt, "--ckpt"), (onnx, "--onnx"), (engine, "--engine")):
        if given is not None and not Path(given).is_file():
            raise DeployError(f"{what} {given}: no such file")
    if engine is not None:
        flavor = engine_sidecar(Path(engine))["flavor"]
        fp32 = Path(engine).with_name(onnx_file("fp32"))
        return Model(f"--engine {engine}", engines={flavor: Path(engine)}, onnx={"fp32": fp32} if fp32.is_file() else {})
    if onnx is not None:
        model = Model(f"--onnx {onnx}", onnx={onnx_precision(Path(onnx)): Path(onnx)})
        if ckpt is not None:  # the checkpoint it came from: the self-check gets its PyTorch reference
            model.canary = export_to_cache(Model(f"--ckpt {ckpt}", ckpt=Path(ckpt), key=key)).canary
        return model
    if ckpt is not None:
        return Model(f"--ckpt {ckpt}", ckpt=Path(ckpt), key=key)
    if engines_dir is not None:
        return _from_manifest(Path(engines_dir), f"{Path(engines_dir) / MANIFEST}")
    for folder in engines_dirs():
        if (folder / MANIFEST).is_file():
            return _from_manifest(folder, f"{folder / MANIFEST}")
    if missing(EXPORTER):  # said before downloading
        raise DeployError(
            f"no export found ({', '.join(str(f) for f in engines_dirs())} hold no {MANIFEST}), and running the "
            "public checkpoint needs the exporter: pip install -e '.[export]', or pass --engines-dir"
        )
    return Model("public checkpoint (user cache)", ckpt=fetch_checkpoint())


def export_to_cache(model: Model) -> Model:
    """Give a checkpoint-only model its ONNX graphs and canary: the export pipeline (ONNX only, parity gate
    included) run once into the user cache, keyed by the checkpoint's sha256, the state_dict key, this
    package's version and the opset, so a new exporter never serves a stale graph. It needs the exporter's
    packages (the [export] extra); a runtime-only install says so."""
    try:
        from export.onnx_export import OPSET
        from export.pipeline import ExportConfig, run_export
    except ImportError as exc:
        raise DeployError(
            f"{model.origin}: a checkpoint is exported before it runs, which needs the exporter ({exc.name} is "
            "not installed: pip install -e '.[export]'); or use an export's folder (--engines-dir)"
        ) from None

    version = package_version()
    folder = cache_dir() / "models" / f"{sha256_file(model.ckpt)[:16]}-{model.key or 'auto'}-v{version}-opset{OPSET}"
    if not (folder / MANIFEST).is_file():
        run_export(ExportConfig(ckpt=model.ckpt, out_dir=folder, key=model.key, flavor="none"))
    cached = _from_manifest(folder, model.origin)
    model.onnx, model.canary = cached.onnx, cached.canary
    return model


def onnx_path(model: Model, precision: str) -> Path:
    """The `precision` ONNX graph of `model`, exported into the cache first for a checkpoint-only model."""
    if precision in model.onnx:
        return model.onnx[precision]
    if model.ckpt is not None and not model.onnx:
        export_to_cache(model)
        return onnx_path(model, precision)
    raise BackendError(f"no {precision} ONNX graph in {model.origin}")


