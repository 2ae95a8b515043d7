"""The deployed c1 without its Concat (export/model.py MergeConv), and the levers bench/graph_levers.py measures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bench.graph_levers import concat_c1, slice_pads
from core.metrics import compare
from export.fuse import fuse
from export.onnx_export import export_fp32
from export.parity import THRESHOLDS, to_nchw
from tests.test_fuse import (
    RELATIVE_BOUND,
    SIZES,
    assert_fusion_exact,
    random_training_model,
)


@pytest.fixture(scope="module")
def fp32_graph(public_model) -> onnx.ModelProto:
    return export_fp32(public_model)[0]


def test_exported_c1_is_six_convs_and_no_concat_joins_the_block_outputs(fp32_graph) -> None:
    """The only Concats left build ESA's Resize sizes (1-D shape tensors); c1's weight slices are initializers."""
    nodes = fp32_graph.graph.node
    assert [n.name for n in nodes if n.op_type == "Concat" and ".esa/" not in n.name] == []
    c1 = [n for n in nodes if n.name.startswith("c1/")]
    assert sorted(n.op_type for n in c1) == ["Add"] * 5 + ["Conv"] * 6
    initializers = {i.name: i for i in fp32_graph.graph.initializer}
    weights = [initializers[n.input[1]] for n in c1 if n.op_type == "Conv"]
    assert [list(w.dims) for w in weights] == [[36, 36, 1, 1]] * 6
    assert sum(len(n.input) == 3 for n in c1 if n.op_type == "Conv") == 1  # the bias, once


@pytest.mark.parametrize("seed", [0, 5])
def test_deployed_model_matches_the_training_form(seed: int) -> None:
    """Training form (RCB branches, c1 over the Concat) against the fused form (c1 as six convs): float32 rounding."""
    model = random_training_model(seed)
    fused = fuse(model)
    assert fused.c1.deploy and not model.c1.deploy
    assert_fusion_exact(model, fused)


@pytest.mark.parametrize("size", SIZES)
def test_split_c1_equals_concat_c1_on_the_real_weights(public_model, photos, size) -> None:
    """The checkpoint's deployed form against the same weights with c1 over the Concat, on photo crops."""
    x = torch.from_numpy(to_nchw(photos[1][1][: size[0], : size[1]]))
    with torch.no_grad():
        reference = concat_c1(public_model)(x)
        error = (public_model(x) - reference).abs().max().item()
    assert error <= RELATIVE_BOUND * max(1.0, reference.abs().max().item())


def test_the_equivalence_check_is_not_vacuous(public_model) -> None:
    """c1's six parts fed in the wrong order, or its bias added six times, are far outside the bound."""
    parts = [torch.randn(1, 36, 20, 20, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    c1 = public_model.c1
    with torch.no_grad():
        reference = concat_c1(public_model).c1(*parts)
        assert (c1(*parts[::-1]) - reference).abs().max().item() > 1e-2
        assert (c1(*parts) + 5 * c1.bias.view(1, -1, 1, 1) - reference).abs().max().item() > 1e-2


def test_exported_graph_matches_pytorch_in_openvino(public_model, fp32_graph, photos, tmp_path) -> None:
    """What the change is for: OpenVINO CPU runs the Concat-free graph to the export gate's FP32 bound."""
    import openvino as ov

    path = tmp_path / "fp32.onnx"
    onnx.save(fp32_graph, str(path))
    x = to_nchw(photos[2][1][:64, :80])
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with torch.no_grad():
        reference = concat_c1(public_model)(torch.from_numpy(x)).numpy()
    assert compare(reference, compiled(x)[0]).max_abs <= THRESHOLDS.fp32_max_abs


@pytest.mark.parametrize("size", SIZES)
def test_slice_reflect_border_equals_reflect_pad(size) -> None:
    """The measured alternative to Pad(reflect) is exact, so its timing compares like with like."""
    model = random_training_model(1)
    x = torch.from_numpy(np.random.default_rng(0).random((2, 3, *size), dtype=np.float32))
    with torch.no_grad():
        assert torch.equal(slice_pads(model)(x), model(x))
