"""Make the strongly typed FP16 graph that TensorRT 11 and TensorRT-RTX need (they have no FP16 flag).

FP16 weights and compute, FP32 input and output, and explicit Casts around the few nodes kept in FP32.
Which nodes, and why, is measured by bench/fp16_sensitivity.py (see BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import warnings

import onnx
import onnx_ir
from onnxruntime.transformers.float16 import convert_float_to_float16

# Nodes kept in FP32, by the module they come from (export/onnx_export.py names nodes that way).
KEEP_FP32: tuple[str, ...] = ()


def to_fp16(model: onnx.ModelProto, keep_fp32: list[str] | tuple[str, ...] = KEEP_FP32) -> onnx.ModelProto:
    """Convert an FP32 LSANet graph to FP16 with FP32 I/O, keeping the named nodes in FP32."""
    names = {n.name for n in model.graph.node}
    unknown = sorted(set(keep_fp32) - names)
    if unknown:
        raise ValueError(f"nodes to keep in FP32 not in the graph: {unknown}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(
            copy.deepcopy(model), keep_io_types=True, op_block_list=[], node_block_list=list(keep_fp32)
        )
    # The converter leaves stale types in value_info around kept nodes (optional data: the checker re-infers
    # it) and appends its input Casts at the end of the node list, where ONNX requires topological order.
    del converted.graph.value_info[:]
    graph = onnx_ir.from_proto(converted)
    graph.graph.sort()
    converted = onnx_ir.to_proto(graph)
    onnx.checker.check_model(converted, full_check=True)
    return converted
