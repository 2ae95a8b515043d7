"""Fuse each training-form RCB's six branches into one 3x3 conv (../shared/docs/lsanet-architecture.md).

Every branch is linear in x and equals a zero-padded 3x3 conv on x, so the sum is one 3x3 conv whose
kernel and bias are the sums of the branch kernels and biases. Computed in float64, cast at the end.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from export.model import RCB, EdgeBranch, LSANet

Kernel = tuple[torch.Tensor, torch.Tensor]


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def conv3x3_kernel(conv: nn.Conv2d) -> Kernel:
    """The 3x3 branch is already a zero-padded 3x3 conv."""
    return _f64(conv.weight), _f64(conv.bias)


def conv1x1_3x3_kernel(first: nn.Conv2d, second: nn.Conv2d) -> Kernel:
    """1x1 (no bias) then 3x3: K[o, i] = sum_m W3[o, m] * W1[m, i]. Padding commutes with a bias-free 1x1."""
    w1 = _f64(first.weight)[:, :, 0, 0]
    w3 = _f64(second.weight)
    kernel = torch.einsum("omhw,mi->oihw", w3, w1)
    return kernel, torch.zeros(w3.shape[0], dtype=torch.float64)


def identity_kernel(channels: int) -> Kernel:
    """The identity as a 3x3 conv: 1 at the centre tap where o == i."""
    kernel = torch.zeros(channels, channels, 3, 3, dtype=torch.float64)
    kernel[range(channels), range(channels), 1, 1] = 1.0
    return kernel, torch.zeros(channels, dtype=torch.float64)


def edge_kernel(branch: EdgeBranch) -> Kernel:
    """1x1 (k0, b0), b0-filled border, depthwise scale*mask: K[o, i] = D[o] * k0[o, i], bias + b0 * sum(D[o])."""
    depthwise = _f64(branch.scale) * _f64(branch.mask)
    kernel = depthwise * _f64(branch.k0)
    bias = _f64(branch.bias) + _f64(branch.b0) * depthwise.sum(dim=(1, 2, 3))
    return kernel, bias


def rcb_kernel(rcb: RCB) -> Kernel:
    """The single 3x3 conv equivalent to a training-form RCB."""
    channels = rcb.rbr_3x3_branch.in_channels
    parts = [
        conv3x3_kernel(rcb.rbr_3x3_branch),
        conv1x1_3x3_kernel(rcb.rbr_1x1_3x3_branch_1x1, rcb.rbr_1x1_3x3_branch_3x3),
        identity_kernel(channels),
        *(edge_kernel(branch) for branch in rcb.edge_branches()),
    ]
    return sum(k for k, _ in parts), sum(b for _, b in parts)


def fuse(model: LSANet) -> LSANet:
    """Return a new deployed-form LSANet equivalent to `model`; the input network is left unchanged.

    Its RCBs are single 3x3 convs, and its c1 sums one 1x1 conv per block output instead of convolving their
    Concat (export.model.MergeConv): the same weights, so c1 needs no fusion.

    A deployed-form input gives an equal copy.
    """
    if model.deploy:
        return copy.deepcopy(model)
    deployed = LSANet(deploy=True).to(device=model.fea_conv.weight.device)
    state = {k: v for k, v in model.state_dict().items() if ".rbr_" not in k or ".rbr_reparam." in k}
    dtype = model.fea_conv.weight.dtype
    for name, module in model.named_modules():
        if isinstance(module, RCB):
            kernel, bias = rcb_kernel(module)
            state[f"{name}.rbr_reparam.weight"] = kernel.to(dtype)
            state[f"{name}.rbr_reparam.bias"] = bias.to(dtype)
    deployed.load_state_dict(state, strict=True)
    return deployed.train(model.training)
