"""Where the model comes from, and which backend runs it (`--backend auto` and explicit choices).

Model: --engine, --onnx or --ckpt when given; else the manifest export.py wrote in engines/; else the public
checkpoint, fetched into the user cache and verified. Backend, in `auto` order: TensorRT-RTX engine,
standard TensorRT engine (both need a GPU), ONNX Runtime CUDA, OpenVINO CPU (the fastest CPU backend
measured, BENCHMARKS.md), ONNX Runtime CPU, PyTorch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from export.cuda_device import cuda_device
from export.errors import DeployError
from export.fileutil import sha256_file
from export.manifest import MANIFEST, artifact_path, load_manifest, onnx_file
from export.trt_build import MODULES
from runtime.backend import Backend, BackendError
from runtime.fetch import cache_dir, fetch_checkpoint
from runtime.tiling import TileConfig

BACKENDS = ("auto", "tensorrt-rtx", "tensorrt", "onnxruntime", "openvino", "torch")


@dataclass
class Model:
    """The artifacts one model is available as; any may be missing."""

    origin: str
    ckpt: Path | None = None
    key: str | None = None
    onnx: dict[str, Path] = field(default_factory=dict)
    engines: dict[str, Path] = field(default_factory=dict)


def onnx_precision(path: Path) -> str:
    """'fp16' when the graph's weights are FP16 (its I/O is FP32 either way), else 'fp32'."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return "fp16" if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer) else "fp32"


def resolve_model(
    ckpt: Path | None = None,
    onnx: Path | None = None,
    engine: Path | None = None,
    engines_dir: Path = Path("engines"),
    key: str | None = None,
) -> Model:
    """The model the user named, else the exported one, else the public checkpoint (downloaded once)."""
    for given, what in ((ckpt, "--ckpt"), (onnx, "--onnx"), (engine, "--engine")):
        if given is not None and not Path(given).is_file():
            raise DeployError(f"{what} {given}: no such file")
    if engine is not None:
        from runtime.trt_backend import read_sidecar

        flavor = read_sidecar(Path(engine))["flavor"]
        fp32 = Path(engine).with_name(onnx_file("fp32"))
        return Model(f"--engine {engine}", engines={flavor: Path(engine)}, onnx={"fp32": fp32} if fp32.is_file() else {})
    if onnx is not None:
        return Model(f"--onnx {onnx}", onnx={onnx_precision(Path(onnx)): Path(onnx)})
    if ckpt is not None:
        return Model(f"--ckpt {ckpt}", ckpt=Path(ckpt), key=key)
    if (engines_dir / MANIFEST).is_file():
        manifest = load_manifest(engines_dir)
        model = Model(f"{engines_dir / MANIFEST}")
        for precision in ("fp32", "fp16"):
            if path := artifact_path(engines_dir, manifest, kind="onnx", precision=precision):
                model.onnx[precision] = path
        for artifact in manifest["artifacts"]:
            if artifact["kind"] == "engine":
                model.engines[artifact["flavor"]] = engines_dir / artifact["file"]
        source = Path(manifest["checkpoint"]["path"])
        if source.is_file() and sha256_file(source) == manifest["checkpoint"]["sha256"]:
            model.ckpt = source
        return model
    return Model("public checkpoint (user cache)", ckpt=fetch_checkpoint())


def onnx_from_checkpoint(model: Model) -> Path:
    """An FP32 ONNX for a checkpoint-only model, exported once into the cache (keyed by the file's sha256)."""
    digest = sha256_file(model.ckpt)[:16]
    target = cache_dir() / "onnx" / f"{digest}-{model.key or 'auto'}-{onnx_file('fp32')}"
    if not target.is_file():
        from export.checkpoint import load_checkpoint
        from export.fileutil import atomic_write_bytes
        from export.onnx_export import export_fp32

        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, export_fp32(load_checkpoint(model.ckpt, model.key))[0].SerializeToString())
    return target


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _trt(flavor: str, model: Model, precision: str | None) -> Backend:
    module = MODULES[flavor]
    engine = model.engines.get(flavor)
    if engine is None:
        raise BackendError(f"no {module} engine in {model.origin} (export one with export.py)")
    if cuda_device() is None:
        raise BackendError("no NVIDIA GPU found")
    for needed in (module, "pycuda"):
        if not _installed(needed):
            raise BackendError(f"{needed} is not installed (pip install -e '.[gpu]')")
    from runtime.trt_backend import TensorRTBackend

    backend = TensorRTBackend(engine, model.onnx.get("fp32"))
    if precision is not None and backend.precision != precision:
        raise BackendError(f"the engine is {backend.precision}, {precision} was asked for")
    return backend


def _onnx_path(model: Model, precision: str) -> Path:
    if precision in model.onnx:
        return model.onnx[precision]
    if precision == "fp32" and model.ckpt is not None:
        return onnx_from_checkpoint(model)
    raise BackendError(f"no {precision} ONNX graph in {model.origin}")


def _ort(model: Model, precision: str | None, device: str) -> Backend:
    from runtime.ort_backend import ORTBackend, cuda_provider_available

    if device == "cuda" and not cuda_provider_available():
        raise BackendError("ONNX Runtime's CUDA provider is not available (needs onnxruntime-gpu and a GPU)")
    precision = precision or ("fp16" if device == "cuda" and "fp16" in model.onnx else "fp32")
    return ORTBackend(_onnx_path(model, precision), precision, device, fp32_path=model.onnx.get("fp32"))


def _openvino(model: Model, precision: str | None) -> Backend:
    if precision == "fp16":
        raise BackendError("runs FP32 only (FP16 brings no speed on CPUs without FP16 arithmetic)")
    if not _installed("openvino"):
        raise BackendError("openvino is not installed (pip install openvino)")
    from runtime.openvino_backend import OpenVINOBackend

    return OpenVINOBackend(_onnx_path(model, "fp32"))


def _torch(model: Model, precision: str | None) -> Backend:
    if model.ckpt is None:
        raise BackendError(f"needs a checkpoint, and {model.origin} has none (pass --ckpt)")
    if precision == "fp16":
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


def choose_backend(name: str, model: Model, precision: str | None = None) -> Backend:
    """For 'auto' the first backend that can run; else the named one (an error saying why if it cannot)."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
    skipped, reasons = [], []
    for backend_name, label, why, factory in _candidates(model, precision):
        if name not in ("auto", backend_name):
            continue
        try:
            backend = factory()
        except BackendError as exc:
            skipped.append(f"{label}: {exc}")
            reasons.append(str(exc))
            continue
        backend.reason = why if name == "auto" else "chosen with --backend"
        backend.skipped = skipped
        return backend
    if name == "auto":
        raise BackendError("no backend can run here: " + "; ".join(skipped))
    raise BackendError(f"backend {name} cannot run: {'; '.join(reasons)}")


def tile_config(backend: Backend, tile: int | None = None, overlap: int | None = None) -> TileConfig:
    """Tiling for this backend: defaults measured in BENCHMARKS.md, capped by the backend's limits.

    `tile` 0 means no tiling: the whole image in one pass (as far as the backend accepts it).
    """
    limits = backend.limits
    default = TileConfig()
    side = default.tile if tile is None else (tile or 10**6)
    return TileConfig(
        tile=min(side, limits.max_side or side),
        overlap=default.overlap if overlap is None else overlap,
        batch=min(limits.max_batch or 1, default.batch),
        min_side=limits.min_side,
        max_side=limits.max_side,
    )
