"""LSANet x4 (NTIRE 2024 Efficient SR, team MViC_SR) in its training and deployed forms.

The state_dict names are the public contract: the published checkpoint must load strictly.
The layer-by-layer description this follows is ../shared/docs/lsanet-architecture.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.descriptor import MIN_SIZE, SCALE

FEATURES = 36
BLOCKS = 6
ESA_CHANNELS = 16
RGB_MEAN = (0.4488, 0.4371, 0.4040)

SOBEL_DX = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_DY = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


class ESB(nn.Module):
    """Efficient shallow block: 1x1 pointwise conv (no bias), then a reflect-padded depthwise 3x3."""

    def __init__(self, channels: int = FEATURES) -> None:
        super().__init__()
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


class ESBWrapper(nn.Module):
    """An ESB stored under `rbr_reparam`, as the odd blocks of the checkpoint name it."""

    def __init__(self, channels: int = FEATURES) -> None:
        super().__init__()
        self.rbr_reparam = ESB(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rbr_reparam(x)


def pad_with_bias(y: torch.Tensor, b0: torch.Tensor) -> torch.Tensor:
    """Pad `y` (a 1x1 conv output without its bias) by one pixel, then add the bias everywhere.

    The border thus holds b0[c], the value a zero input pixel maps to, which is what makes an edge
    branch equal to one zero-padded 3x3 conv on the branch input.
    """
    return F.pad(y, (1, 1, 1, 1)) + b0.view(1, -1, 1, 1)


class EdgeBranch(nn.Module):
    """A fixed-mask edge branch (Sobel-Dx, Sobel-Dy or Laplacian) of the training-form RCB."""

    def __init__(self, mask: tuple[tuple[float, ...], ...], channels: int = FEATURES) -> None:
        super().__init__()
        self.k0 = nn.Parameter(torch.randn(channels, channels, 1, 1) * 1e-3)
        self.b0 = nn.Parameter(torch.zeros(channels))
        self.scale = nn.Parameter(torch.randn(channels, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.mask = nn.Parameter(torch.tensor(mask).expand(channels, 1, 3, 3).clone(), requires_grad=False)

    def kernel(self) -> torch.Tensor:
        """The depthwise 3x3 kernel, scale[c] * mask[c]."""
        return self.scale * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = pad_with_bias(F.conv2d(x, self.k0), self.b0)
        return F.conv2d(y, self.kernel(), self.bias, groups=x.shape[1])


class RCB(nn.Module):
    """Re-parameterisable conv block: six linear branches in training form, one 3x3 conv deployed."""

    def __init__(self, channels: int = FEATURES, deploy: bool = False) -> None:
        super().__init__()
        self.deploy = deploy
        if deploy:
            self.rbr_reparam = nn.Conv2d(channels, channels, 3, padding=1)
            return
        self.rbr_3x3_branch = nn.Conv2d(channels, channels, 3, padding=1)
        self.rbr_1x1_3x3_branch_1x1 = nn.Conv2d(channels, 2 * channels, 1, bias=False)
        self.rbr_1x1_3x3_branch_3x3 = nn.Conv2d(2 * channels, channels, 3, padding=1, bias=False)
        self.rbr_conv1x1_sbx_branch = EdgeBranch(SOBEL_DX, channels)
        self.rbr_conv1x1_sby_branch = EdgeBranch(SOBEL_DY, channels)
        self.rbr_conv1x1_lpl_branch = EdgeBranch(LAPLACIAN, channels)

    def edge_branches(self) -> tuple[EdgeBranch, EdgeBranch, EdgeBranch]:
        return self.rbr_conv1x1_sbx_branch, self.rbr_conv1x1_sby_branch, self.rbr_conv1x1_lpl_branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.rbr_reparam(x)
        out = self.rbr_3x3_branch(x) + self.rbr_1x1_3x3_branch_3x3(self.rbr_1x1_3x3_branch_1x1(x)) + x
        for branch in self.edge_branches():
            out = out + branch(x)
        return out


class ESA(nn.Module):
    """Enhanced spatial attention (RFDN/RLFN style) with 16 inner channels."""

    def __init__(self, channels: int = FEATURES, inner: int = ESA_CHANNELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, inner, 1)
        self.conv_f = nn.Conv2d(inner, inner, 1)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride=2)
        self.conv3 = nn.Conv2d(inner, inner, 3, padding=1)
        self.conv4 = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        pooled = F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3)
        c3 = F.interpolate(self.conv3(pooled), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1)))


class LFEM(nn.Module):
    """Odd block: three ESBs with GELU and a residual connection."""

    def __init__(self, channels: int = FEATURES) -> None:
        super().__init__()
        self.c1_r = ESB(channels)
        self.c2_r = ESBWrapper(channels)
        self.c4 = ESBWrapper(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.gelu(self.c1_r(x))
        out = F.gelu(self.c2_r(out))
        out = F.gelu(self.c4(out))
        return out + x


class RSAB(nn.Module):
    """Even block: an ESB, two RCBs, a 1x1 conv and spatial attention, with a residual connection."""

    def __init__(self, channels: int = FEATURES, deploy: bool = False) -> None:
        super().__init__()
        self.c1_r = ESB(channels)
        self.c2_r = RCB(channels, deploy)
        self.c4 = RCB(channels, deploy)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.gelu(self.c1_r(x))
        out = F.gelu(self.c2_r(out))
        out = F.gelu(self.c4(out))
        return self.esa(self.c5(out)) + x


class MergeConv(nn.Conv2d):
    """`c1`: a 1x1 conv over the channel concatenation of the block outputs, which it takes as separate tensors.

    Training form: one conv over the concatenation, as trained. Deployed form: the same sum as one 1x1 conv
    per block output with its input-channel slice of the weight, the bias added once, so the traced graph
    has no Concat: OpenVINO CPU copies the 216-channel concatenation in a reference kernel, and the six convs
    with their Adds (fused into the convs) make the whole network 2-3% faster there at 256x256 and 512x512
    tiles (`python -m bench.graph_levers`). Same parameters, same state_dict names in both forms.
    """

    def __init__(self, channels: int = FEATURES, parts: int = BLOCKS, deploy: bool = False) -> None:
        super().__init__(channels * parts, channels, 1)
        self.deploy = deploy

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.deploy:
            return super().forward(torch.cat(parts, dim=1))
        start = parts[0].shape[1]
        out = F.conv2d(parts[0], self.weight[:, :start], self.bias)
        for part in parts[1:]:
            end = start + part.shape[1]
            out = out + F.conv2d(part, self.weight[:, start:end])
            start = end
        return out


class Upsampler(nn.Module):
    """3x3 conv to 3 * scale^2 channels, then PixelShuffle."""

    def __init__(self, channels: int = FEATURES, scale: int = SCALE) -> None:
        super().__init__()
        self.upsampleOneStep = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampleOneStep(x)


class LSANet(nn.Module):
    """LSANet x4. Input: N x 3 x H x W RGB in [0, 1], H and W >= 15. Output: N x 3 x 4H x 4W, not clamped."""

    def __init__(self, deploy: bool = False) -> None:
        super().__init__()
        self.deploy = deploy
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.fea_conv = nn.Conv2d(3, FEATURES, 3, padding=1)
        for i in range(1, BLOCKS + 1):
            block = RSAB(FEATURES, deploy) if i % 2 == 0 else LFEM(FEATURES)
            self.add_module(f"B{i}", block)
        self.c1 = MergeConv(FEATURES, BLOCKS, deploy)
        self.c2 = ESB(FEATURES)
        self.upsampler = Upsampler(FEATURES, SCALE)

    def blocks(self) -> list[nn.Module]:
        return [getattr(self, f"B{i}") for i in range(1, BLOCKS + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            check_input_shape(tuple(x.shape))
        f0 = self.fea_conv(x - self.mean)
        outs = []
        out = f0
        for block in self.blocks():
            out = block(out)
            outs.append(out)
        out = self.c2(F.gelu(self.c1(*outs))) + f0
        return self.upsampler(out) + self.mean


def check_input_shape(shape: tuple[int, ...]) -> None:
    """Raise a ValueError that says what is wrong with an input shape LSANet cannot take."""
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"LSANet takes N x 3 x H x W RGB input, got shape {tuple(shape)}")
    h, w = shape[-2:]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(
            f"LSANet needs an input of at least {MIN_SIZE}x{MIN_SIZE} pixels (its attention's stride-2 conv and "
            f"7x7 max-pool need them), got {h}x{w}; pad the image and crop the output"
        )
