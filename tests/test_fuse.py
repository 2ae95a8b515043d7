"""Fusion is exact: a fused network matches its training form to float32 rounding, borders included."""

from __future__ import annotations

import pytest
import torch

import export.fuse as fuse_module
import export.model as model_module
from export.fuse import fuse
from export.model import RCB, EdgeBranch, LSANet

SIZES = [(15, 15), (17, 23), (40, 52)]

# Both forms compute the same sums in a different order (six convs and an add vs one conv), each conv
# accumulating up to 72 * 9 float32 products, through ~25 layers. Measured max abs difference: 2.7e-7 on
# outputs of magnitude ~1 (about 2 float32 ulps at 1.0). The bound allows 16 ulps (2e-6) relative to the
# output's magnitude; the broken fusions below differ by 1e-2 and more.
RELATIVE_BOUND = 2e-6


def random_training_model(seed: int) -> LSANet:
    """A training-form LSANet whose every branch parameter is large enough to change the output."""
    torch.manual_seed(seed)
    model = LSANet(deploy=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, EdgeBranch):
                module.k0.normal_(0.0, 0.3)
                module.b0.normal_(0.0, 0.5)
                module.scale.normal_(0.0, 0.5)
                module.bias.normal_(0.0, 0.5)
            elif isinstance(module, RCB):
                module.rbr_1x1_3x3_branch_1x1.weight.normal_(0.0, 0.2)
                module.rbr_3x3_branch.bias.normal_(0.0, 0.3)
    return model


def fusion_error(model: LSANet, fused: LSANet, size: tuple[int, int]) -> tuple[float, float]:
    """(max abs difference, max abs reference output) on a random batch of two images."""
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(size[0] * 100 + size[1]))
    with torch.no_grad():
        reference = model(x)
        return (reference - fused(x)).abs().max().item(), reference.abs().max().item()


def assert_fusion_exact(model: LSANet, fused: LSANet) -> None:
    for size in SIZES:
        error, magnitude = fusion_error(model, fused, size)
        assert error <= RELATIVE_BOUND * max(1.0, magnitude), (size, error)


@pytest.mark.parametrize("seed", [0, 1])
def test_fused_matches_training_form(seed: int) -> None:
    model = random_training_model(seed)
    assert_fusion_exact(model, fuse(model))


def test_edge_branches_matter_in_the_test_model() -> None:
    """Guard the guard: with these parameters, dropping the edge branches changes the output a lot."""
    model = random_training_model(0)
    reference = fuse(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, EdgeBranch):
                module.scale.zero_()
    error, _ = fusion_error(model, reference, (17, 23))
    assert error > 1e-2


def test_fused_state_dict_has_the_checkpoint_keys_and_shapes(public_model) -> None:
    fused = fuse(random_training_model(0))
    expected = {k: v.shape for k, v in public_model.state_dict().items()}
    assert {k: v.shape for k, v in fused.state_dict().items()} == expected
    assert fused.deploy


def test_input_network_is_unchanged() -> None:
    model = random_training_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fuse(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.deploy


def test_fusing_a_deployed_network_returns_an_equal_copy(public_model) -> None:
    copy = fuse(public_model)
    assert copy is not public_model
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(), public_model.state_dict().values()))


ORIGINAL_EDGE_KERNEL = fuse_module.edge_kernel
ORIGINAL_IDENTITY_KERNEL = fuse_module.identity_kernel


def zero_border_padding(y: torch.Tensor, b0: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(y + b0.view(1, -1, 1, 1), (1, 1, 1, 1))


def mirrored_edge_kernel(branch: EdgeBranch):
    kernel, bias = ORIGINAL_EDGE_KERNEL(branch)
    return kernel.flip(-1), bias


@pytest.mark.parametrize(
    ("module", "name", "replacement"),
    [
        (model_module, "pad_with_bias", zero_border_padding),
        (fuse_module, "identity_kernel", lambda channels: (ORIGINAL_IDENTITY_KERNEL(channels)[0] * 0, 0)),
        (fuse_module, "edge_kernel", mirrored_edge_kernel),
    ],
    ids=["zero-border-instead-of-b0", "identity-branch-dropped", "edge-kernel-mirrored"],
)
def test_broken_fusion_is_detected(monkeypatch, module, name, replacement) -> None:
    """The exactness check is not vacuous: each deliberately broken fusion makes it fail."""
    model = random_training_model(0)
    monkeypatch.setattr(module, name, replacement)
    with pytest.raises(AssertionError):
        assert_fusion_exact(model, fuse(model))
