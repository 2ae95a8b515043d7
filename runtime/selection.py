"""Where the model comes from, and which backend runs it (`--backend auto` and explicit choices).

Model: --engine, --onnx or --ckpt when given; else the manifest export.py wrote in engines/; else the public
checkpoint, fetched into the user cache and verified. Backend, in `auto` order: TensorRT-RTX engine,
standard TensorRT engine (both need a GPU), ONNX Runtime CUDA, OpenVINO CPU (the fastest CPU backend
measured, BENCHMARKS.md), ONNX Runtime CPU, PyTorch.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.artifacts import MANIFEST, MODULES, artifact_path, load_manifest, onnx_file
from export.canary import canary_input, judge, read_canary
from export.cli import BACKENDS
from export.cuda_device import cuda_device
from export.errors import DeployError, first_line
from export.fileutil import sha256_file
from runtime.backend import Backend, BackendError
from runtime.fetch import cache_dir, fetch_checkpoint
from runtime.memory import whole_image_side
from runtime.tiling import TileConfig


@dataclass
class Model:
    """The artifacts one model is available as; any may be missing. `canary` holds the FP32 reference output
    every backend is checked against before use (export/canary.py); without it only plausibility is checked."""

    origin: str
    ckpt: Path | None = None
    key: str | None = None
    onnx: dict[str, Path] = field(default_factory=dict)
    engines: dict[str, Path] = field(default_factory=dict)
    canary: Path | None = None


def onnx_precision(path: Path) -> str:
    """'fp16' when the graph's weights are FP16 (its I/O is FP32 either way), else 'fp32'."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as exc:
        raise DeployError(f"{path}: not an ONNX model ({first_line(exc)})") from None
    return "fp16" if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer) else "fp32"


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
    return [*found, Path("engines"), Path(__file__).resolve().parent.parent / "engines", cache_dir() / "engines"]


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
        from runtime.trt_backend import read_sidecar

        flavor = read_sidecar(Path(engine))["flavor"]
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
    return Model("public checkpoint (user cache)", ckpt=fetch_checkpoint())


def export_to_cache(model: Model) -> Model:
    """Give a checkpoint-only model its ONNX graphs and canary: the export pipeline (ONNX only, parity gate
    included) run once into the user cache, keyed by the checkpoint's sha256, the state_dict key, this
    package's version and the opset, so a new exporter never serves a stale graph."""
    from importlib import metadata

    from export.onnx_export import OPSET
    from export.pipeline import ExportConfig, run_export

    try:
        version = metadata.version("lsanet-deploy")
    except metadata.PackageNotFoundError:
        version = "source"
    folder = cache_dir() / "models" / f"{sha256_file(model.ckpt)[:16]}-{model.key or 'auto'}-v{version}-opset{OPSET}"
    if not (folder / MANIFEST).is_file():
        run_export(ExportConfig(ckpt=model.ckpt, out_dir=folder, key=model.key, flavor="none"))
    cached = _from_manifest(folder, model.origin)
    model.onnx, model.canary = cached.onnx, cached.canary
    return model


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _trt(flavor: str, model: Model, precision: str | None) -> Backend:
    module = MODULES[flavor]
    engine = model.engines.get(flavor)
    if engine is None:
        raise BackendError(f"no {module} engine in {model.origin} (export one with export.py)")
    if cuda_device() is None:
        raise BackendError("no NVIDIA GPU found")
    from runtime.trt_backend import TensorRTBackend

    backend = TensorRTBackend(engine)
    if precision is not None and backend.precision != precision:
        raise BackendError(f"the engine is {backend.precision}, {precision} was asked for")
    return backend


def _onnx_path(model: Model, precision: str) -> Path:
    if precision in model.onnx:
        return model.onnx[precision]
    if model.ckpt is not None and not model.onnx:
        export_to_cache(model)
        return _onnx_path(model, precision)
    raise BackendError(f"no {precision} ONNX graph in {model.origin}")


def _ort(model: Model, precision: str | None, device: str) -> Backend:
    from runtime.ort_backend import ORTBackend, cuda_provider_available

    if device == "cuda" and not cuda_provider_available():
        raise BackendError("ONNX Runtime's CUDA provider is not available (needs onnxruntime-gpu and a GPU)")
    precision = precision or ("fp16" if device == "cuda" and "fp16" in model.onnx else "fp32")
    return ORTBackend(_onnx_path(model, precision), precision, device)


def _openvino(model: Model, precision: str | None) -> Backend:
    if precision == "fp16":
        raise BackendError("runs fp32, or bf16 (--bf16) on CPUs with bfloat16 arithmetic; FP16 brings no speed on CPUs")
    if not _installed("openvino"):
        raise BackendError("openvino is not installed (pip install openvino)")
    from runtime.openvino_backend import OpenVINOBackend

    return OpenVINOBackend(_onnx_path(model, "fp32"), precision or "fp32")


def _torch(model: Model, precision: str | None) -> Backend:
    if model.ckpt is None:
        raise BackendError(f"needs a checkpoint, and {model.origin} has none (pass --ckpt)")
    if precision not in (None, "fp32"):
        raise BackendError("the PyTorch backend runs FP32 only")
    from runtime.torch_backend import TorchBackend

    return TorchBackend(model.ckpt, model.key)


def _candidates(model: Model, precision: str | None) -> list[tuple[str, str, str, Callable[[], Backend]]]:
    """(--backend name, label, why it would be chosen, factory) in `auto` order."""
    return [
        ("tensorrt-rtx", "tensorrt-rtx", "TensorRT-RTX engine on an RTX GPU: the fastest path",
         lambda: _trt("rtx", model, precision)),
        ("tensorrt", "tensorrt", "standard TensorRT engine on an NVIDIA GPU", lambda: _trt("tensorrt", model, precision)),
        ("onnxruntime", "onnxruntime-cuda", "ONNX Runtime on the GPU", lambda: _ort(model, precision, "cuda")),
        ("openvino", "openvino", "no GPU backend available; OpenVINO is the fastest CPU backend measured",
         lambda: _openvino(model, precision)),
        ("onnxruntime", "onnxruntime", "ONNX Runtime on the CPU", lambda: _ort(model, precision, "cpu")),
        ("torch", "torch", "PyTorch reference", lambda: _torch(model, precision)),
    ]  # fmt: skip


@functools.lru_cache(maxsize=4)
def _canary(path: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(input, reference or None): read once per run, though `auto` may check several backends and a fallback."""
    return read_canary(path) if path is not None else (canary_input(), None)


def self_check(backend: Backend, model: Model) -> None:
    """Run the canary through an active backend; BackendError with the reason if it misses its reference
    (or, without one, is not a plausible x4 model). Measured cost in BENCHMARKS.md."""
    try:
        inputs, reference = _canary(model.canary)
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    try:
        output = backend.infer(inputs)
    except (ValueError, RuntimeError) as exc:  # a graph that is not LSANet's can fail on the canary's shape
        raise BackendError(f"self-check failed: {first_line(exc)}") from None
    if reason := judge(output, inputs, reference, backend.precision):
        raise BackendError(f"self-check failed: {reason}")


def _activate_checked(backend: Backend, model: Model) -> None:
    """Load the backend and run its self-check; on any failure it is released again before raising."""
    try:
        backend.activate()
        self_check(backend, model)
    except (BackendError, MemoryError) as exc:
        backend.deactivate()
        raise BackendError(str(exc) or type(exc).__name__) from None


@dataclass
class Choice:
    """What selection decided: the active, self-checked backend, why it was chosen, the better-ranked ones
    passed over (each with its reason), and the FP32 backend that reruns tiles an FP16 backend returns with
    NaN/Inf (not loaded until a tile needs it; None when the backend is FP32 or no FP32 graph exists)."""

    backend: Backend
    reason: str
    skipped: list[str]
    fallback: Backend | None = None


def _fallback(model: Model, backend: Backend) -> Backend | None:
    if backend.precision == "fp32" or "fp32" not in model.onnx:
        return None
    from runtime.ort_backend import ORTBackend

    return ORTBackend(model.onnx["fp32"], "fp32", "auto")


def choose_backend(name: str, model: Model, precision: str | None = None) -> Choice:
    """For 'auto' the first backend that loads and passes its self-check, else the named one (an error saying
    why if it cannot). Every candidate passed over is listed with its reason."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
    skipped, reasons = [], []
    for backend_name, label, why, factory in _candidates(model, precision):
        if name not in ("auto", backend_name):
            continue
        try:
            backend = factory()
            _activate_checked(backend, model)
        except BackendError as exc:
            skipped.append(f"{label}: {exc}")
            reasons.append(str(exc))
            continue
        return Choice(backend, why if name == "auto" else "chosen with --backend", skipped, _fallback(model, backend))
    if name == "auto":
        raise BackendError("no backend can run here: " + "; ".join(skipped))
    raise BackendError(f"backend {name} cannot run: {'; '.join(reasons)}")


def tile_config(backend: Backend, tile: int | None = None, overlap: int | None = None) -> TileConfig:
    """Tiling for this backend: defaults measured in BENCHMARKS.md, capped by the backend's limits.

    `tile` 0 means as few passes as memory allows: the largest pass that fits the memory available now
    (runtime/memory.py), the whole image where it fits, and never a pass the backend does not accept.
    """
    limits = backend.limits
    default = TileConfig()
    side = default.tile if tile is None else (tile or whole_image_side())
    try:
        return TileConfig(
            tile=min(side, limits.max_side or side),
            overlap=default.overlap if overlap is None else overlap,
            batch=min(limits.max_batch or 1, default.batch),
            min_side=limits.min_side,
            max_side=limits.max_side,
        )
    except ValueError as exc:
        raise DeployError(f"--tile/--overlap: {exc}") from None
