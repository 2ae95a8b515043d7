"""Trace the deployed LSANet to a clean FP32 ONNX graph with dynamic batch, height and width.

Opset 18: the dynamo exporter's native opset (no version-conversion pass), inside the 17-20 range that
TensorRT 10/11, TensorRT-RTX and ONNX Runtime support for every op used here (Pad-18 reflect, Resize-18,
DepthToSpace, Erf). Opset 20's Gelu op buys nothing: both ONNX Runtime and TensorRT fuse the Erf pattern.
The deployed c1 traces as six Conv nodes and their Adds, with no Concat of the block outputs (MergeConv in
export/model.py); its weight slices fold into initializers.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import onnx
import torch

from core.descriptor import INPUT_NAME, MIN_SIZE, OUTPUT_NAME
from core.errors import DeployError, first_line
from export.fuse import fuse
from export.model import LSANet

OPSET = 18
MAX_SIDE = 16384
MAX_BATCH = 256


class OnnxExportError(DeployError):
    """The traced graph is not what the deployment needs."""


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Number of nodes of each op type, most frequent first."""
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


def dead_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes none of whose outputs reach another node or a graph output."""
    used = {o.name for o in model.graph.output}
    for node in model.graph.node:
        used.update(node.input)
    return [n.name for n in model.graph.node if not any(o in used for o in n.output)]


def _name_by_module(model: onnx.ModelProto) -> None:
    """Name each node after the module it came from ("B2.c4.rbr_reparam/Conv"), then drop the exporter's
    metadata: it holds stack traces with local paths, which would make the file differ between machines."""
    seen: collections.Counter[str] = collections.Counter()
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        scopes = ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "[]"))
        module = scopes[-2] if len(scopes) >= 2 and not scopes[-2].startswith("_") else ""
        base = f"{module or 'LSANet'}/{node.op_type}"
        seen[base] += 1
        node.name = base if seen[base] == 1 else f"{base}_{seen[base] - 1}"
        del node.metadata_props[:]
    del model.metadata_props[:]


def _trace(model: LSANet) -> torch.onnx.ONNXProgram:
    example = torch.rand(1, 3, 64, 64)
    dims = {
        0: torch.export.Dim("batch", min=1, max=MAX_BATCH),
        2: torch.export.Dim("height", min=MIN_SIZE, max=MAX_SIDE),
        3: torch.export.Dim("width", min=MIN_SIZE, max=MAX_SIDE),
    }
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        return torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": dims},
            optimize=False,
            verbose=False,
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines (stdout) and torchvision notices (the torch.onnx logger)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def export_fp32(model: LSANet) -> tuple[onnx.ModelProto, dict[str, dict[str, int]]]:
    """Fuse, trace and clean up; return the checked FP32 model and its op counts before and after clean-up."""
    deployed = fuse(model).eval().float()
    program = _trace(deployed)
    before = op_counts(program.model_proto)
    program.optimize()
    proto = program.model_proto
    _name_by_module(proto)
    after = op_counts(proto)
    check(proto)
    return proto, {"before_cleanup": before, "after_cleanup": after}


def check(model: onnx.ModelProto) -> None:
    """The full ONNX checker, plus what the deployment needs: static pads, no dead nodes, named I/O."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OnnxExportError(f"ONNX checker rejected the graph: {first_line(exc)}") from None
    initializers = {i.name for i in model.graph.initializer}
    dynamic_pads = [n.name for n in model.graph.node if n.op_type == "Pad" and n.input[1] not in initializers]
    if dynamic_pads:
        raise OnnxExportError(f"Pad sizes computed at run time in {dynamic_pads[:3]}; expected static pads")
    if dead := dead_nodes(model):
        raise OnnxExportError(f"dead nodes in the graph: {dead[:3]}")
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise OnnxExportError(f"unexpected graph inputs/outputs {names}")
