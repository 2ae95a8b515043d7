"""Parameter and multiply-accumulate counts of LSANet's training and deployed forms."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from export.fuse import fuse
from export.model import LSANet


@dataclass(frozen=True)
class Cost:
    """What one form of the network costs on one input size."""

    form: str
    parameters: int
    macs: int
    module_conv_macs: int


def _module_conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of nn.Conv2d modules only: what hook-based counters (the challenge's figures) report."""
    total = 0

    def hook(conv: nn.Conv2d, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = conv.kernel_size
        total += output.numel() * (conv.in_channels // conv.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def cost(model: LSANet, height: int = 256, width: int = 256) -> Cost:
    """Count parameters and MACs (every convolution, functional ones included) for one N=1 input."""
    x = torch.rand(1, 3, height, width)
    counter = FlopCounterMode(display=False)
    with torch.no_grad():
        with counter:
            model(x)
        module_macs = _module_conv_macs(model, x)
    return Cost(
        form="deployed" if model.deploy else "training",
        parameters=sum(p.numel() for p in model.parameters()),
        macs=counter.get_total_flops() // 2,
        module_conv_macs=module_macs,
    )


def report(model: LSANet, height: int = 256, width: int = 256) -> str:
    """A short table of the training and deployed forms' cost.

    A deployed-form checkpoint has no training form; its row is then that of the architecture (the cost
    does not depend on the weights).
    """
    training = LSANet(deploy=False).eval() if model.deploy else model
    lines = [f"LSANet x4 at {height}x{width} LR input (N=1):"]
    for c in (cost(training, height, width), cost(fuse(model), height, width)):
        lines.append(
            f"  {c.form:<9} {c.parameters:>9,} parameters  {c.macs / 1e9:6.2f} G MACs"
            f"  ({c.module_conv_macs / 1e9:.2f} G counting nn.Conv2d modules only)"
        )
    lines.append("  The training form's edge branches are functional convs, which module-hook counters miss.")
    return "\n".join(lines)
