"""Engine builds with the real TensorRT-RTX (it builds without a GPU): what is checked before building, the
targets, the build key, the default profile against what the runtime sends, and cancelling by signal."""

from __future__ import annotations

import signal
from pathlib import Path

import onnx
import pytest
import tensorrt_rtx

from core.nvidia import CudaDevice
from core.tensorrt_common import rtx_targets
from export import trt_build
from export.trt_build import (
    BuildOptions,
    EngineBuildError,
    Profile,
    build_engine,
    build_key,
)
from runtime.backends.tensorrt import TensorRTBackend
from runtime.tiling import TileConfig, plan
from runtime.upscaler import tile_config


def test_fp16_build_has_fp32_io_fp16_convolutions_and_is_supported(exported, tmp_path: Path) -> None:
    out = exported[0]
    result = build_engine("rtx", out / "lsanet_x4_fp16.onnx", tmp_path / "e.rtx.engine", precision="fp16", opset=18)
    assert [(t["name"], t["dtype"]) for t in result.sidecar["io"]] == [
        ("lr", "FLOAT"), ("sr", "FLOAT"), ("sr_pixels", "UINT8"), ("sr_sum", "FLOAT"),
    ]  # fmt: skip
    with pytest.raises(EngineBuildError, match=r"an FP16 build, but none of the \d+ convolutions computes in FP16"):
        build_engine("rtx", out / "lsanet_x4_fp32.onnx", tmp_path / "f.rtx.engine", precision="fp16", opset=18)
    with pytest.raises(EngineBuildError, match=r"an FP32 build, but \d+ convolutions compute in FP16"):
        build_engine("rtx", out / "lsanet_x4_fp16.onnx", tmp_path / "g.rtx.engine", precision="fp32", opset=18)
    assert not (tmp_path / "f.rtx.engine").exists() and not (tmp_path / "g.rtx.engine").exists()


def test_a_graph_without_the_contracts_names_is_refused_before_building(exported, tmp_path: Path) -> None:
    proto = onnx.load(exported[0] / "lsanet_x4_fp16.onnx")
    last = next(node for node in proto.graph.node if "sr" in node.output)
    last.output[list(last.output).index("sr")] = proto.graph.output[0].name = "y"
    onnx.save(proto, tmp_path / "renamed.onnx")
    with pytest.raises(EngineBuildError, match=r"I/O lr FLOAT, y FLOAT, sr_pixels UINT8, sr_sum FLOAT: expected lr FLOAT, sr FLOAT"):
        build_engine("rtx", tmp_path / "renamed.onnx", tmp_path / "e.rtx.engine", precision="fp16", opset=18)
    assert not (tmp_path / "e.rtx.engine").exists()


def test_rtx_targets_come_from_tensorrt_rtx(exported, tmp_path: Path) -> None:
    targets = rtx_targets()
    assert targets == sorted(
        (n for n in tensorrt_rtx.ComputeCapability.__members__ if n.startswith("SM")),
        key=lambda n: int(tensorrt_rtx.ComputeCapability.__members__[n]),
    )
    assert {"SM75", "SM86", "SM89", "SM120"} <= set(targets) and "SM90" not in targets
    with pytest.raises(EngineBuildError, match="TensorRT-RTX cannot target SM90"):
        build_engine("rtx", exported[0] / "lsanet_x4_fp16.onnx", tmp_path / "e.rtx.engine", precision="fp16", opset=18,
                     options=BuildOptions(compute_capabilities=("SM90",)))  # fmt: skip


def test_build_key_ignores_the_driver_and_rtx_ignores_the_gpu() -> None:
    ada, updated = CudaDevice("RTX 4090", "8.9", "12.4", 24564), CudaDevice("RTX 4090", "8.9", "12.8", 24564)
    ampere = CudaDevice("RTX 3090", "8.6", "12.4", 24576)

    def key(flavor: str, device: CudaDevice | None) -> str:
        return build_key(flavor, "10.13.0", "sha", Profile(), BuildOptions(), device)

    assert key("tensorrt", ada) == key("tensorrt", updated) != key("tensorrt", ampere)
    assert key("rtx", ada) == key("rtx", ampere) == key("rtx", None)


def test_default_profile_is_what_the_runtime_sends(exported) -> None:
    default, tiles = Profile(), TileConfig()
    assert default.max == (tiles.batch, tiles.tile, tiles.tile)
    backend = TensorRTBackend(exported[0] / "lsanet_x4_fp16.rtx.engine")
    config = tile_config(backend.limits)
    # Photos, panoramas, tiny and odd sizes: every pass the tiler makes fits the engine's profile.
    for height, width in ((3000, 4000), (600, 2000), (513, 513), (1024, 256), (16, 700), (7, 9)):
        layout = plan(height, width, config)
        assert default.min[1] <= layout.tile_height <= default.max[1], (height, width)
        assert default.min[2] <= layout.tile_width <= default.max[2], (height, width)
    assert config.batch <= default.max[0]


@pytest.fixture
def signal_arrives_during_build(monkeypatch):
    """Deliver SIGTERM once TensorRT-RTX's build has begun (our handlers are installed by then), and record
    what build_serialized_network returned."""
    returned = []
    original = tensorrt_rtx.Builder.build_serialized_network

    def build(self, network, config):
        signal.raise_signal(signal.SIGTERM)
        returned.append(original(self, network, config))
        return returned[-1]

    monkeypatch.setattr(tensorrt_rtx.Builder, "build_serialized_network", build)
    return returned


class Terminated(Exception):
    """What the command's own SIGTERM handler raises (core/errors.py turns it into a clean exit)."""


def test_a_signal_cancels_the_build_and_reaches_the_commands_handler(exported, tmp_path, signal_arrives_during_build) -> None:
    def command_handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, command_handler)
    try:
        with pytest.raises(Terminated):
            build_engine("rtx", exported[0] / "lsanet_x4_fp16.onnx", tmp_path / "e.rtx.engine", precision="fp16", opset=18)
        assert signal.getsignal(signal.SIGTERM) is command_handler  # restored after the build
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert signal_arrives_during_build == [None]  # TensorRT-RTX stopped: the monitor said no
    assert not (tmp_path / "e.rtx.engine").exists()


def test_a_signal_the_command_ignores_still_cancels_the_build(exported, tmp_path, signal_arrives_during_build) -> None:
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with pytest.raises(EngineBuildError, match="build cancelled by signal SIGTERM"):
            build_engine("rtx", exported[0] / "lsanet_x4_fp16.onnx", tmp_path / "e.rtx.engine", precision="fp16", opset=18)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert signal.SIGTERM in trt_build.STOP_SIGNALS and signal_arrives_during_build == [None]  # TensorRT-RTX stopped
