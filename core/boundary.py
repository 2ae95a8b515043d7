"""The model boundary for pixels: integer HWC tiles in, integer HWC tiles out, with a checksum of each tile's
float output, so that NaN/Inf (an FP16 overflow) is still seen after the cast to integers.

The network itself takes N x 3 x H x W float32 in [0, 1] and returns N x 3 x 4H x 4W float32, unclamped. The
boundary around it is defined once, here, in two forms that give the same bytes:
- `to_model` / `from_model`: on the host, in numpy (16-bit images, the CPU backends, where converting in
  the graph does not pay: BENCHMARKS.md; `to_model` also feeds a TensorRT engine);
- `wrap_onnx`: the same operations as ONNX nodes around an exported graph (ONNX Runtime CUDA runs it, so
  8-bit tiles cross into the backend as bytes and the conversion runs on the device, not in Python; a
  TensorRT engine is built with its output side, so only bytes come back).
In: x / peak (float32 division). Out: x * peak, clamped to [0, peak], rounded half to even, cast.
Check: the sum of each tile's float output, which is not finite exactly when the output holds NaN or Inf
(one reduction instead of an element-wise test: a sum of finite values overflows only for values above
1e31, which are garbage too). Same order, same float32 operations: bench/host_work.py and
tests/test_boundary.py measure and hold that.
"""

from __future__ import annotations

import numpy as np

from core.errors import first_line

PIXELS_IN = "lr_pixels"  # N x H x W x 3 uint8
PIXELS_OUT = "sr_pixels"  # N x 4H x 4W x 3 uint8
CHECKSUM = "sr_sum"  # N float32: the sum of each tile's float output


def to_model(tiles: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """N x H x W x 3 uint8/uint16 -> the network's N x 3 x H x W float32 in [0, 1], written into `out` when
    given (a backend's pinned input buffer: no copy after)."""
    peak = float(np.iinfo(tiles.dtype).max)
    batch = np.empty((tiles.shape[0], 3, *tiles.shape[1:3]), np.float32) if out is None else out
    # Computed as float32(x / peak), the same value as the graph's float32 division (tests/test_boundary.py).
    np.multiply(tiles.transpose(0, 3, 1, 2), 1.0 / peak, out=batch, casting="unsafe")
    return batch


def from_model(output: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The network's N x 3 x H x W float output -> (N x H x W x 3 of `dtype`, N flags: the tile's output held
    NaN/Inf, so its values are meaningless; the caller reruns or refuses that tile)."""
    import cv2

    dtype = np.dtype(dtype)
    peak = float(np.iinfo(dtype).max)
    tiles = np.empty((output.shape[0], *output.shape[2:], 3), dtype)
    # NaN/Inf may overflow the sum and cannot be cast: expected here, and said by the flags.
    with np.errstate(over="ignore", invalid="ignore"):
        broken = nonfinite(output.sum(axis=(1, 2, 3), dtype=np.float32))
        for i, planes in enumerate(output):
            # Interleave first (OpenCV's merge: 2.6x faster than a strided transpose, bench/host_work.py),
            # then scale, clamp and round in place: clip(x, 0, 1) * peak == clip(x * peak, 0, peak) bit for bit.
            hwc = cv2.merge([planes[0], planes[1], planes[2]])
            hwc *= peak
            np.clip(hwc, 0.0, peak, out=hwc)
            np.rint(hwc, out=hwc)
            tiles[i] = hwc
    return tiles, broken


def nonfinite(checksums: np.ndarray) -> np.ndarray:
    """N flags from N checksums: True where the tile's float output held NaN or Inf."""
    return ~np.isfinite(checksums)


def wrap_onnx(model: bytes, keep_float: bool = False) -> bytes:
    """An exported LSANet graph (FP32 or FP16 inside; one float32 N x 3 x H x W input, one output) with the 8-bit boundary
    around it: `lr_pixels` uint8 in, `sr_pixels` uint8 and `sr_sum` out. Built in memory at load time, so
    any graph the runtime accepts (an export, a bare --onnx) gets it. Needs the onnx package.

    `keep_float`: only the output side; the float input and output stay, the pixel outputs are added beside
    them. A TensorRT engine is built from that form: one engine (one kernel compilation on the user's GPU)
    then serves the float path (16-bit images, the self-check) and the 8-bit one, whose output, 16x the
    input, is what costs on the host. TensorRT allows uint8 only at the network's edge, so the cast to
    uint8 is the last node.

    Outputs: `sr_pixels` N x 4H x 4W x 3 uint8, `sr_sum` N float32 (pass it to `nonfinite`)."""
    import onnx
    from onnx import TensorProto, helper

    try:
        proto = onnx.load_from_string(model)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"not an ONNX model ({exc})") from None
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, the graph has {len(graph.input)} and {len(graph.output)}")
    source, result = graph.input[0], graph.output[0].name
    dims = [d.dim_param or d.dim_value or None for d in source.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ValueError(f"expected an N x 3 x H x W input, the graph's has {len(dims)} dimensions")
    batch, height, width = dims[0], dims[2], dims[3]

    def const(name: str, values: list, dtype: int) -> str:
        graph.initializer.append(helper.make_tensor(name, dtype, [len(values)] if len(values) > 1 else [], values))
        return name

    peak = const("boundary/peak", [255.0], TensorProto.FLOAT)
    zero = const("boundary/zero", [0.0], TensorProto.FLOAT)
    axes = const("boundary/chw_axes", [1, 2, 3], TensorProto.INT64)
    node = helper.make_node
    before = [
        node("Cast", [PIXELS_IN], ["boundary/in_f"], to=TensorProto.FLOAT, name="boundary/in_cast"),
        node("Div", ["boundary/in_f", peak], ["boundary/in_scaled"], name="boundary/in_div"),
        node("Transpose", ["boundary/in_scaled"], [source.name], perm=[0, 3, 1, 2], name="boundary/in_nchw"),
    ]
    after = [
        node("ReduceSum", [result, axes], [CHECKSUM], keepdims=0, name="boundary/checksum"),
        node("Mul", [result, peak], ["boundary/out_scaled"], name="boundary/out_mul"),
        node("Clip", ["boundary/out_scaled", zero, peak], ["boundary/out_clipped"], name="boundary/out_clip"),
        node("Round", ["boundary/out_clipped"], ["boundary/out_rounded"], name="boundary/out_round"),
        node("Transpose", ["boundary/out_rounded"], ["boundary/out_nhwc"], perm=[0, 2, 3, 1], name="boundary/out_nhwc"),
        node("Cast", ["boundary/out_nhwc"], [PIXELS_OUT], to=TensorProto.UINT8, name="boundary/out_cast"),
    ]
    nodes = [*([] if keep_float else before), *graph.node, *after]
    del graph.node[:]
    graph.node.extend(nodes)
    if not keep_float:
        graph.input.remove(source)
        graph.input.append(helper.make_tensor_value_info(PIXELS_IN, TensorProto.UINT8, [batch, height, width, 3]))
        del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(PIXELS_OUT, TensorProto.UINT8, [batch, None, None, 3]),
            helper.make_tensor_value_info(CHECKSUM, TensorProto.FLOAT, [batch]),
        ]
    )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"the wrapped graph is not valid ONNX: {first_line(exc)}") from None
    return proto.SerializeToString()
