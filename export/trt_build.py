"""Build TensorRT engines from an ONNX graph: TensorRT for RTX (`tensorrt_rtx`, builds without a GPU) and
standard TensorRT 10.x/11.x (`tensorrt`, needs a GPU), through one code path, each with a JSON sidecar.

Follows ../shared/docs/tensorrt-notes.md: strongly typed networks (precision lives in the ONNX graph; there
is no FP16 flag in TensorRT 11 and TensorRT-RTX), name-based profiles, parse errors read from the parser,
None from build_serialized_network treated as a failure, a timing cache kept next to standard engines.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from export.contract import MIN_SIZE
from export.cuda_device import CudaDevice, cuda_device
from export.errors import DeployError
from export.fileutil import atomic_write_bytes, sha256_file

MODULES = {"rtx": "tensorrt_rtx", "tensorrt": "tensorrt"}
RTX_DEFAULT_TARGETS = ("SM86", "SM89", "SM120")


class EngineBuildError(DeployError):
    """An engine could not be built; the message carries TensorRT's own reason."""


class SidecarError(DeployError):
    """An engine's sidecar is missing, unreadable, or describes another file."""


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: (batch, height, width) at min, opt and max; channels are fixed at 3."""

    min: tuple[int, int, int] = (1, 16, 16)
    opt: tuple[int, int, int] = (4, 256, 256)
    max: tuple[int, int, int] = (8, 512, 512)

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            n, h, w = getattr(self, name)
            if n < 1 or h < MIN_SIZE or w < MIN_SIZE:
                raise ValueError(f"profile {name} {n}x{h}x{w}: batch must be >= 1 and sides >= {MIN_SIZE} (LSANet's floor)")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile must satisfy min <= opt <= max in every dimension, got {self}")

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return tuple((n, 3, h, w) for n, h, w in (self.min, self.opt, self.max))  # type: ignore[return-value]


def parse_shape(text: str) -> tuple[int, int, int]:
    """'NxHxW' -> (N, H, W), for the command line."""
    match = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text.strip())
    if not match:
        raise ValueError(f"expected a shape as NxHxW (e.g. 4x256x256), got '{text}'")
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


@dataclass(frozen=True)
class BuildOptions:
    # Workspace pool limit; None leaves TensorRT's default. A set limit makes TensorRT-RTX allocate that
    # much device memory while building, which fails on machines without a GPU.
    workspace_mib: int | None = None
    # TensorRT-RTX targets, e.g. ("SM75", "SM86"); empty = TensorRT-RTX's default (8.6, 8.9, 12.0).
    compute_capabilities: tuple[str, ...] = ()
    # Standard TensorRT: build one plan for every Ampere-or-newer GPU instead of only the building GPU.
    hardware_compatible: bool = False


@dataclass
class EngineResult:
    engine: Path
    sidecar: dict = field(default_factory=dict)
    reused: bool = False


def flavor_status(flavor: str) -> str | None:
    """None if this flavour can build engines here, else the reason it cannot."""
    try:
        importlib.import_module(MODULES[flavor])
    except ImportError:
        extra = "[rtx]" if flavor == "rtx" else "[gpu]"
        return f"{MODULES[flavor]} not installed (pip install -e '.{extra}')"
    if flavor == "tensorrt" and cuda_device() is None:
        return "standard TensorRT needs a CUDA GPU to build, and none was found"
    return None


def capture_logger(trt):
    """A TensorRT logger that keeps warnings and errors: some reasons only ever reach the logger."""

    class Capture(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg) -> None:  # noqa: ANN001 - TensorRT's signature
            if severity <= trt.ILogger.Severity.WARNING:
                self.messages.append(str(msg))

    return Capture()


def _targets(flavor: str, options: BuildOptions, device: CudaDevice | None) -> list[str]:
    if flavor == "rtx":
        return list(options.compute_capabilities or RTX_DEFAULT_TARGETS)
    if options.hardware_compatible:
        return ["AMPERE_PLUS"]
    return [f"SM{device.compute_capability.replace('.', '')}"] if device else []


def build_key(flavor: str, version: str, onnx_sha256: str, profile: Profile, options: BuildOptions, device) -> str:
    """Everything that decides the engine's bytes; an engine is reused only when all of it is unchanged."""
    material = json.dumps(
        {
            "flavor": flavor,
            "version": version,
            "onnx": onnx_sha256,
            "profile": asdict(profile),
            "options": asdict(options),
            "device": device.as_dict() if device else None,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def read_sidecar(engine: Path) -> dict:
    """The engine's JSON sidecar (`<engine>.json`), checked to belong to this very file."""
    path = engine.with_suffix(".json")
    try:
        sidecar = json.loads(path.read_text())
    except FileNotFoundError:
        raise SidecarError(f"{engine}: no sidecar {path.name}") from None
    except ValueError:
        raise SidecarError(f"{engine}: sidecar {path.name} is not valid JSON") from None
    if not engine.is_file() or sidecar.get("engine_sha256") != sha256_file(engine):
        raise SidecarError(f"{engine}: the file does not match its sidecar (sha256 differs)")
    return sidecar


def _reusable(engine: Path, key: str) -> dict | None:
    try:
        sidecar = read_sidecar(engine)
    except SidecarError:
        return None
    return sidecar if sidecar.get("build_key") == key else None


def build_engine(
    flavor: str,
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    opset: int,
    profile: Profile = Profile(),
    options: BuildOptions = BuildOptions(),
    reuse_from: Path | None = None,
) -> EngineResult:
    """Build (or reuse) one engine from `onnx_path` and write it with its sidecar `<engine>.json`.

    `reuse_from` is an existing engine: it is kept when its sidecar's build key matches, i.e. same ONNX bytes,
    flavour, version, profile, options and GPU, and the file still has its recorded sha256.
    """
    if reason := flavor_status(flavor):
        raise EngineBuildError(f"cannot build a {flavor} engine: {reason}")
    trt = importlib.import_module(MODULES[flavor])
    device = cuda_device()
    onnx_sha256 = sha256_file(onnx_path)
    key = build_key(flavor, trt.__version__, onnx_sha256, profile, options, device)
    if reuse_from is not None and (sidecar := _reusable(reuse_from, key)):
        return EngineResult(reuse_from, sidecar, reused=True)

    logger = capture_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)] or logger.messages[-3:]
        raise EngineBuildError(f"{flavor}: cannot parse {onnx_path.name}: {'; '.join(errors) or 'unknown error'}")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise EngineBuildError(f"{flavor}: expected one input and one output, got {network.num_inputs}/{network.num_outputs}")

    config = builder.create_builder_config()
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    trt_profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    trt_profile.set_shape(input_name, *profile.shapes())
    if config.add_optimization_profile(trt_profile) < 0:
        raise EngineBuildError(f"{flavor}: TensorRT rejected the optimisation profile {profile}")

    cache_path = engine_path.with_suffix(".cache")
    if flavor == "rtx":
        if options.compute_capabilities:
            config.num_compute_capabilities = len(options.compute_capabilities)
            for i, cc in enumerate(options.compute_capabilities):
                config.set_compute_capability(getattr(trt.ComputeCapability, cc), i)
    else:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        if options.hardware_compatible:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{flavor}: build failed: {'; '.join(logger.messages[-3:]) or 'no reason given'}")
    atomic_write_bytes(engine_path, bytes(serialized))
    if flavor == "tensorrt":
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))

    io = [network.get_input(0), network.get_output(0)]
    sidecar = {
        "flavor": flavor,
        "module": MODULES[flavor],
        "version": trt.__version__,
        "onnx_sha256": onnx_sha256,
        "opset": opset,
        "precision": precision,
        "profile": {input_name: {k: list(v) for k, v in zip(("min", "opt", "max"), profile.shapes())}},
        "io": [
            {"name": t.name, "mode": mode, "dtype": str(t.dtype).split(".")[-1], "shape": list(t.shape)}
            for t, mode in zip(io, ("input", "output"))
        ],
        "target_compute_capabilities": _targets(flavor, options, device),
        "build_options": asdict(options),
        "gpu": device.as_dict() if device else None,
        "engine_sha256": sha256_file(engine_path),
        "engine_bytes": engine_path.stat().st_size,
        "build_key": key,
    }
    atomic_write_bytes(engine_path.with_suffix(".json"), (json.dumps(sidecar, indent=2) + "\n").encode())
    return EngineResult(engine_path, sidecar)
