"""The 8-bit pixel boundary (core/boundary.py): the graph form gives the host form's bytes, counts NaN/Inf,
and every backend's 8-bit path agrees with its float path; a wrong one fails the self-check."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from skimage import data

from core import boundary
from core.boundary import (
    CHECKSUM,
    PIXELS_IN,
    PIXELS_OUT,
    from_model,
    to_model,
    wrap_onnx,
)
from runtime.backends.base import BackendError
from runtime.backends.choose import self_check
from runtime.backends.onnxruntime import ORTBackend
from runtime.backends.openvino import OpenVINOBackend
from runtime.backends.pytorch import TorchBackend
from runtime.model.source import Model


def stand_in(body: list, inputs: list[str]) -> bytes:
    """A float N x 3 x H x W -> N x 3 x 4H x 4W graph: `body` ends in `y`, resized x4 nearest to `sr`."""
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 4.0, 4.0])
    nodes = [*body, helper.make_node("Resize", ["y", "", "scales"], ["sr"], mode="nearest")]
    graph = helper.make_graph(
        nodes,
        "stand_in",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 3, "h", "w"]) for name in inputs],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["n", 3, None, None])],
        [scales],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


IDENTITY = stand_in([helper.make_node("Identity", ["lr"], ["y"])], ["lr"])
# 0 / 0 is NaN and x / 0 is Inf: the tile's zero pixels become non-finite outputs.
SELF_DIVIDED = stand_in([helper.make_node("Div", ["lr", "lr"], ["y"])], ["lr"])


def run_wrapped(graph: bytes, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(wrap_onnx(graph), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [PIXELS_IN]
    assert [o.name for o in session.get_outputs()] == [PIXELS_OUT, CHECKSUM]
    pixels, checksums = session.run(None, {PIXELS_IN: tiles})
    return pixels, boundary.nonfinite(checksums)


def every_byte() -> np.ndarray:
    """2 x 16 x 24 x 3 uint8 tiles holding each of the 256 values at least once in every channel."""
    return np.resize(np.arange(256, dtype=np.uint8), (2, 16, 24, 3))


def test_every_byte_value_survives_the_wrapped_graph_and_the_host() -> None:
    tiles = every_byte()
    expected = tiles.repeat(4, axis=1).repeat(4, axis=2)
    pixels, broken = run_wrapped(IDENTITY, tiles)
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, expected) and broken.tolist() == [False, False]
    host, flagged = from_model(to_model(tiles).repeat(4, axis=2).repeat(4, axis=3), np.uint8)
    assert np.array_equal(host, expected) and flagged.tolist() == [False, False]


def test_graph_input_is_the_hosts_float32_division() -> None:
    """The graph divides in float32; the host's multiply by 1/peak in float64, cast, gives the same values."""
    for dtype in (np.uint8, np.uint16):
        values = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
        tiles = values[None, None, :, None].repeat(3, axis=3)
        divided = values.astype(np.float32) / np.float32(values[-1])
        assert np.array_equal(to_model(tiles)[0, :, 0], np.stack([divided] * 3))


def nan_tiles() -> np.ndarray:
    """Three tiles for SELF_DIVIDED: one NaN pixel in the first, none in the second, a NaN channel in the third."""
    tiles = np.full((3, 16, 16, 3), 9, np.uint8)
    tiles[0, 2, 3] = 0
    tiles[2, :, :, 1] = 0
    return tiles


def test_nonfinite_tiles_are_flagged_in_the_graph_and_on_the_host() -> None:
    tiles = nan_tiles()
    assert run_wrapped(SELF_DIVIDED, tiles)[1].tolist() == [True, False, True]
    x = to_model(tiles)
    with np.errstate(invalid="ignore", divide="ignore"):
        inf = np.where(x > 0, x / x, np.float32(np.inf)).repeat(4, axis=2).repeat(4, axis=3)
        assert from_model((x / x).repeat(4, axis=2).repeat(4, axis=3), np.uint8)[1].tolist() == [True, False, True]
    assert from_model(inf, np.uint8)[1].tolist() == [True, False, True]


BACKENDS = {
    "onnxruntime graph": lambda path: ORTBackend(path, "fp32", "cpu", graph_boundary=True),
    "onnxruntime host": lambda path: ORTBackend(path, "fp32", "cpu"),
    "openvino host": OpenVINOBackend,
}


@pytest.mark.parametrize("make", BACKENDS.values(), ids=BACKENDS.keys())
def test_each_backend_flags_nan_tiles(tmp_path, make) -> None:
    """In a graph the checksum is computed by the backend's runtime, which must not simplify it away."""
    graph = tmp_path / "self_divided.onnx"
    graph.write_bytes(SELF_DIVIDED)
    with make(graph) as backend:
        assert backend.infer_pixels(nan_tiles())[1].tolist() == [True, False, True]


def test_out_of_range_outputs_are_clamped_and_rounded_half_to_even() -> None:
    output = np.array([-0.5, 1.7, 0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255], np.float32)
    planes = np.resize(output, (1, 3, 4, 6))
    host, _ = from_model(planes, np.uint8)
    # The host's own float32 arithmetic decides the halves: 0.5/255*255 may land either side of 0.5.
    want = np.clip(np.rint(np.clip(output * np.float32(255), 0, 255)), 0, 255).astype(np.uint8)
    assert host[0, 0].tolist() == [[int(v)] * 3 for v in want]
    assert host[0, 0, 0, 0] == 0 and host[0, 0, 1, 0] == 255


def test_graphs_it_cannot_wrap_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an ONNX model"):
        wrap_onnx(b"\x00 definitely not protobuf \xff" * 3)
    two_inputs = stand_in([helper.make_node("Add", ["a", "b"], ["y"])], ["a", "b"])
    with pytest.raises(ValueError, match="one input and one output"):
        wrap_onnx(two_inputs)


def photo_tiles() -> np.ndarray:
    """Two 64x80 tiles of real photos, where rounding edges are met in numbers."""
    return np.stack([data.astronaut()[200:264, 180:260], data.coffee()[150:214, 300:380]])


@pytest.fixture(scope="module")
def real_backends(exported, weights_path):
    folder = exported[0]
    return {
        # The wrapped graph ONNX Runtime runs on CUDA, run here on the CPU.
        "onnxruntime-fp32": ORTBackend(folder / "lsanet_x4_fp32.onnx", "fp32", "cpu", graph_boundary=True),
        "onnxruntime-fp16": ORTBackend(folder / "lsanet_x4_fp16.onnx", "fp16", "cpu", graph_boundary=True),
        "torch": TorchBackend(weights_path, device="cpu"),
    }


@pytest.mark.parametrize("name", ["onnxruntime-fp32", "onnxruntime-fp16", "torch"])
def test_each_backends_8bit_path_gives_its_float_paths_pixels(real_backends, name) -> None:
    backend = real_backends[name]
    tiles = photo_tiles()
    with backend:
        pixels, broken = backend.infer_pixels(tiles)
        host, flagged = from_model(backend.infer(to_model(tiles)), np.uint8)
        sixteen, _ = backend.infer_pixels(tiles.astype(np.uint16) * 257)  # 16-bit tiles take the float path
    assert pixels.shape == host.shape == (2, 256, 320, 3) and pixels.dtype == np.uint8
    assert broken.tolist() == flagged.tolist() == [False, False]
    off = np.abs(pixels.astype(int) - host)
    assert off.max() == 0, (name, off.max())  # on one device, the same float32 operations: the same bytes
    assert sixteen.dtype == np.uint16 and np.abs(sixteen.astype(int) // 257 - host).max() <= 1


class SwappedChannels(ORTBackend):
    """An 8-bit path that returns BGR: what a wrong boundary in a graph would do."""

    def pixels_impl(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pixels, broken = super().pixels_impl(tiles)
        return pixels[..., ::-1].copy(), broken


def test_the_self_check_refuses_a_wrong_8bit_path(exported) -> None:
    folder = exported[0]
    model = Model("test", onnx={"fp32": folder / "lsanet_x4_fp32.onnx"}, canary=folder / "lsanet_x4_canary.npz")
    with ORTBackend(folder / "lsanet_x4_fp32.onnx", "fp32", "cpu") as good:
        self_check(good, model)
    with SwappedChannels(folder / "lsanet_x4_fp32.onnx", "fp32", "cpu", graph_boundary=True) as bad:
        with pytest.raises(BackendError, match="8-bit path is up to .* levels from its float path"):
            self_check(bad, model)


def test_wrapped_graph_is_valid_onnx_with_named_io(exported) -> None:
    wrapped = onnx.load_from_string(wrap_onnx((exported[0] / "lsanet_x4_fp16.onnx").read_bytes()))
    onnx.checker.check_model(wrapped, full_check=True)
    assert [i.name for i in wrapped.graph.input] == [PIXELS_IN]
    assert [o.name for o in wrapped.graph.output] == [PIXELS_OUT, CHECKSUM]


def test_the_output_side_alone_keeps_the_float_path_and_adds_the_pixels(exported) -> None:
    """The graph a TensorRT engine is built from (wrap_onnx keep_float), run by ONNX Runtime: the float input
    and output as before, and beside them the host's exact bytes and the NaN flag, for FP32 and FP16."""
    tiles = photo_tiles()
    x = to_model(tiles)
    for precision in ("fp32", "fp16"):
        graph = (exported[0] / f"lsanet_x4_{precision}.onnx").read_bytes()
        wrapped = ort.InferenceSession(wrap_onnx(graph, keep_float=True), providers=["CPUExecutionProvider"])
        plain = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        assert [i.name for i in wrapped.get_inputs()] == ["lr"]
        assert [o.name for o in wrapped.get_outputs()] == ["sr", PIXELS_OUT, CHECKSUM]
        sr, pixels, checksums = wrapped.run(None, {"lr": x})
        assert np.array_equal(sr, plain.run(None, {"lr": x})[0]), precision
        host, flagged = from_model(sr, np.uint8)
        assert np.array_equal(pixels, host) and flagged.tolist() == boundary.nonfinite(checksums).tolist() == [False, False]
    nan = ort.InferenceSession(wrap_onnx(SELF_DIVIDED, keep_float=True), providers=["CPUExecutionProvider"])
    assert boundary.nonfinite(nan.run(None, {"lr": to_model(nan_tiles())})[2]).tolist() == [True, False, True]
