"""Build TensorRT engines from an ONNX graph: TensorRT for RTX (`tensorrt_rtx`, builds without a GPU) and
standard TensorRT 10.x/11.x (`tensorrt`, needs a GPU), through one code path, each with a JSON sidecar.

Follows ../shared/docs/tensorrt-notes.md: strongly typed networks (precision lives in the ONNX graph; there
is no FP16 flag in TensorRT 11 and TensorRT-RTX), name-based profiles, parse errors read from the parser,
None from build_serialized_network treated as a failure, a timing cache kept next to standard engines.
The engine is built from the ONNX graph with the pixel outputs of core/boundary.py added (`sr_pixels` uint8,
`sr_sum`), so that 8-bit tiles come back from the GPU as bytes while the float output stays for 16-bit
images. The network is checked before building (its I/O as core/descriptor.py and core/boundary.py name
them, FP16 convolutions in an FP16 build, `is_network_supported`), and a build can be cancelled by a signal
(IProgressMonitor).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from core.artifacts import MODULES, RTX_DEFAULT_TARGETS, SidecarError, read_sidecar
from core.boundary import CHECKSUM, PIXELS_OUT, wrap_onnx
from core.descriptor import INPUT_NAME, MIN_SIZE, OUTPUT_NAME
from core.errors import DeployError
from core.files import atomic_write_bytes, sha256_file
from core.nvidia import CudaDevice, cuda_device
from core.signals import STOP_SIGNALS
from core.tensorrt_common import process_logger, rtx_targets

# What the runtime really sends (runtime/tiling.py's TileConfig defaults through runtime/model/source.py's
# tile_config): batches of 1 tile, at most DEPLOY_TILE x DEPLOY_TILE LR pixels, no side longer than the
# profile's max side. The default profile's max is exactly that, and the runtime sizes its buffers from the
# engine's max, so the profile is the one setting both follow (tests/test_trt_build.py ties them together).
DEPLOY_BATCH = 1
DEPLOY_TILE = 512
# Copies of the one optimisation profile in every engine. The runtime runs one tile per execution context
# at once (runtime/backends/tensorrt.py's lanes), and TensorRT lets execution contexts of a dynamic-shape
# engine run concurrently only on separate profiles (NvInferRuntime.h, ICudaEngine::createExecutionContext).
# Two cost 0.3 s of build and 1.4 MB of engine (TensorRT-RTX 1.7: 3.0 against 1.6 MB).
PROFILES = 2


class EngineBuildError(DeployError):
    """An engine could not be built; the message carries TensorRT's own reason."""


class ProfileError(DeployError):
    """An optimisation profile that cannot be built (sides below LSANet's floor, min > opt > max)."""


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: (batch, height, width) at min, opt and max; channels are fixed at 3.

    max = the largest tile the runtime sends (a larger max only makes the runtime's buffers bigger: 63 MiB
    pinned + 63 MiB device per lane at 512; a 1024 max quadruples them). opt = 3/4 of it: images above the
    pixel budget are cut into equal tiles of about half to all of the max side, so 384 is the middle of
    what runs.
    min = just above LSANet's 15-pixel floor.
    """

    min: tuple[int, int, int] = (1, 16, 16)
    opt: tuple[int, int, int] = (DEPLOY_BATCH, DEPLOY_TILE * 3 // 4, DEPLOY_TILE * 3 // 4)
    max: tuple[int, int, int] = (DEPLOY_BATCH, DEPLOY_TILE, DEPLOY_TILE)

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            n, h, w = getattr(self, name)
            if n < 1 or h < MIN_SIZE or w < MIN_SIZE:
                raise ProfileError(f"profile {name} {n}x{h}x{w}: batch must be >= 1 and sides >= {MIN_SIZE} (LSANet's floor)")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ProfileError(f"profile must satisfy min <= opt <= max in every dimension, got {self}")

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
        extra = "[rtx]" if flavor == "rtx" else "[tensorrt]"
        return f"{MODULES[flavor]} not installed (pip install -e '.{extra}')"
    if flavor == "tensorrt" and cuda_device() is None:
        return "standard TensorRT needs a CUDA GPU to build, and none was found"
    return None


def _targets(flavor: str, options: BuildOptions, device: CudaDevice | None) -> list[str]:
    if flavor == "rtx":
        return list(options.compute_capabilities or RTX_DEFAULT_TARGETS)
    if options.hardware_compatible:
        return ["AMPERE_PLUS"]
    return [device.sm] if device else []


def build_key(flavor: str, version: str, graph_sha256: str, profile: Profile, options: BuildOptions, device) -> str:
    """Everything that decides the engine's bytes; an engine is reused only when all of it is unchanged
    (`graph_sha256`: of the graph that is built, the ONNX file with the pixel outputs added).

    The GPU counts only for standard TensorRT (its plan is made for the building GPU), and then only its
    name and compute capability: a driver update does not change the plan. A TensorRT-RTX build does not
    depend on the machine at all (ahead-of-time, for the listed targets).
    """
    gpu = {"name": device.name, "compute_capability": device.compute_capability} if device and flavor != "rtx" else None
    material = json.dumps(
        {"flavor": flavor, "version": version, "graph": graph_sha256, "profile": asdict(profile), "profiles": PROFILES,
         "options": asdict(options), "device": gpu},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(material.encode()).hexdigest()


def _reusable(engine: Path, key: str) -> dict | None:
    try:
        sidecar = read_sidecar(engine)
    except SidecarError:
        return None
    return sidecar if sidecar.get("build_key") == key else None




@contextmanager
def cancellable(trt: ModuleType, config) -> Iterator[list[int]]:
    """Let SIGINT/SIGTERM/SIGHUP cancel the build run inside the block.

    TensorRT holds the main thread inside build_serialized_network, so a signal is otherwise acted on only
    when the build ends. Inside the block a signal is only recorded; TensorRT asks the IProgressMonitor set on
    `config` after every step whether to go on (it calls it on the building thread, where Python then runs
    the recording handler), and gets False. On leaving, the previous handlers come back and the first signal
    is delivered again, so the command's own handler (clean exit, staging removed) runs as if it had come
    now. Signal handlers can only be set from the main thread; elsewhere the build is not cancellable.
    Yields the signals received.
    """
    received: list[int] = []

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            pass

        def phase_finish(self, phase_name) -> None:
            pass

        def step_complete(self, phase_name, step) -> bool:
            return not received

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    monitor = Monitor()  # held here: the config may not keep the Python object alive
    config.progress_monitor = monitor
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])


def io_tensors(network) -> list:
    """The network's inputs, then its outputs."""
    return [network.get_input(i) for i in range(network.num_inputs)] + [network.get_output(i) for i in range(network.num_outputs)]


def check_network(trt: ModuleType, builder, network, config, precision: str) -> None:
    """What must hold before building: the I/O the runtime expects (FP32 `lr` in, FP32 `sr`, uint8
    `sr_pixels` and FP32 `sr_sum` out), FP16 convolutions in an FP16 build (none in an FP32 one), and the
    builder's own `is_network_supported`."""
    expected = [(INPUT_NAME, trt.float32), (OUTPUT_NAME, trt.float32), (PIXELS_OUT, trt.uint8), (CHECKSUM, trt.float32)]
    found = [(t.name, t.dtype) for t in io_tensors(network)]
    if network.num_inputs != 1 or found != expected:
        said = ", ".join(f"{name} {dtype.name}" for name, dtype in found)
        want = ", ".join(f"{name} {dtype.name}" for name, dtype in expected)
        raise EngineBuildError(f"I/O {said}: expected {want} (core/descriptor.py, core/boundary.py)")
    convolutions = [network.get_layer(i) for i in range(network.num_layers)]
    convolutions = [layer for layer in convolutions if layer.type == trt.LayerType.CONVOLUTION]
    half = sum(layer.get_output(0).dtype == trt.float16 for layer in convolutions)
    if precision == "fp16" and half == 0:
        raise EngineBuildError(f"an FP16 build, but none of the {len(convolutions)} convolutions computes in FP16")
    if precision == "fp32" and half:
        raise EngineBuildError(f"an FP32 build, but {half} convolutions compute in FP16")
    if hasattr(builder, "is_network_supported") and not builder.is_network_supported(network, config):
        raise EngineBuildError(f"the builder reports the network unsupported: {process_logger(trt).reason() or 'no reason given'}")


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

    `reuse_from` is the existing engine in the output folder: it is kept when its sidecar's build key matches,
    i.e. the same graph (the ONNX bytes with the pixel outputs added), flavour, version, profile, options
    and GPU, and the file still has its recorded sha256. Standard TensorRT's timing cache is read from
    beside it and written beside `engine_path`.
    """
    if reason := flavor_status(flavor):
        raise EngineBuildError(f"cannot build a {flavor} engine: {reason}")
    trt = importlib.import_module(MODULES[flavor])
    unknown = sorted(set(options.compute_capabilities) - set(rtx_targets())) if flavor == "rtx" else []
    if unknown:
        raise EngineBuildError(f"TensorRT-RTX cannot target {', '.join(unknown)} (it targets {', '.join(rtx_targets())})")
    device = cuda_device()
    try:
        graph = wrap_onnx(onnx_path.read_bytes(), keep_float=True)
    except ValueError as exc:
        raise EngineBuildError(f"{flavor}: cannot parse {onnx_path.name}: {exc}") from None
    key = build_key(flavor, trt.__version__, hashlib.sha256(graph).hexdigest(), profile, options, device)
    if reuse_from is not None and (sidecar := _reusable(reuse_from, key)):
        return EngineResult(reuse_from, sidecar, reused=True)

    logger = process_logger(trt)
    logger.reason()  # forget what earlier builds logged
    try:
        builder = trt.Builder(logger)
    except TypeError:  # pybind's answer when the C++ factory returns null (e.g. a driver too old for this TensorRT)
        raise EngineBuildError(f"{MODULES[flavor]} {trt.__version__} cannot start a builder: {logger.reason() or 'no reason given'}") from None
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)] or [logger.reason()]
        raise EngineBuildError(f"{flavor}: cannot parse {onnx_path.name}: {'; '.join(e for e in errors if e) or 'unknown error'}")

    config = builder.create_builder_config()
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    input_name = network.get_input(0).name
    for _ in range(PROFILES):
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(input_name, *profile.shapes())
        if config.add_optimization_profile(trt_profile) < 0:
            raise EngineBuildError(f"{flavor}: TensorRT rejected the optimisation profile {profile}")

    # FP32 means FP32: TF32 is on by default for FP32 convolutions (tensorrt-notes), which would put an FP32
    # engine (and the FP32 layers an FP16 graph keeps) outside the self-check's 1e-4 bound.
    config.clear_flag(trt.BuilderFlag.TF32)
    if flavor == "rtx":
        if options.compute_capabilities:
            config.num_compute_capabilities = len(options.compute_capabilities)
            for i, cc in enumerate(options.compute_capabilities):
                if not config.set_compute_capability(getattr(trt.ComputeCapability, cc), i):
                    raise EngineBuildError(f"{flavor}: TensorRT-RTX refused compute capability {cc}: {logger.reason()}")
    else:
        previous = (reuse_from or engine_path).with_suffix(".cache")
        cache = config.create_timing_cache(previous.read_bytes() if previous.is_file() else b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):  # a cache from another GPU or version
            warnings.warn(f"{previous.name}: timing cache made for another GPU or TensorRT; building without it", stacklevel=2)
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        if options.hardware_compatible:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    try:
        check_network(trt, builder, network, config, precision)
    except EngineBuildError as exc:
        raise EngineBuildError(f"{flavor}: {onnx_path.name}: {exc}") from None

    with cancellable(trt, config) as received:
        serialized = builder.build_serialized_network(network, config)
    if received:  # the signal's own handler ignored it: the build was still cancelled
        raise EngineBuildError(f"{flavor}: build cancelled by signal {signal.Signals(received[0]).name}")
    if serialized is None:
        raise EngineBuildError(f"{flavor}: build failed: {logger.reason() or 'no reason given'}")
    atomic_write_bytes(engine_path, bytes(serialized))
    if flavor == "tensorrt" and (timing := config.get_timing_cache()) is not None:
        atomic_write_bytes(engine_path.with_suffix(".cache"), bytes(timing.serialize()))

    sidecar = {
        "flavor": flavor,
        "module": MODULES[flavor],
        "version": trt.__version__,
        "onnx_sha256": sha256_file(onnx_path),
        "opset": opset,
        "precision": precision,
        "profile": {input_name: {k: list(v) for k, v in zip(("min", "opt", "max"), profile.shapes())}},
        "profiles": PROFILES,  # copies of that profile, one per tile the runtime runs at once
        "io": [
            {"name": t.name, "mode": "input" if t.is_network_input else "output", "dtype": t.dtype.name, "shape": list(t.shape)}
            for t in io_tensors(network)
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
