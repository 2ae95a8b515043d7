"""An estimate of the network in bfloat16, on any CPU: what the export's parity gate reports for
`upscale.py --bf16` (OpenVINO on CPUs with bfloat16 arithmetic), which most exporting machines cannot run.

It models bf16 convolution hardware (AVX-512 BF16, AMX): weights, biases and each convolution's input and
output are rounded to bfloat16 (8 mantissa bits), products are exact and accumulate in FP32, and what runs
between convolutions (activations, attention arithmetic, additions) stays in FP32 (OpenVINO fuses much of
it into the convolutions as post-ops, applied before the output is rounded). The rounding is done on FP32
tensors, so the FP32 kernels run: on a 2-core CPU without bf16 instructions the gate's photos and smooth
fields take 0.78 s this way against 15 s with the whole network cast to torch.bfloat16, which also rounds
after every elementwise operation and is 1.3-4.2 dB further from FP32 on the gate's three photos. Measured
with `python -m bench.bf16_estimate`, which also runs OpenVINO's real bf16 where the CPU has it, to check
this estimate against it.
"""

from __future__ import annotations

import torch

from export.fuse import fuse
from export.model import LSANet


def _rounded(tensor: torch.Tensor) -> torch.Tensor:
    """The nearest bfloat16 value of each element (round to nearest even), kept as FP32."""
    return tensor.to(torch.bfloat16).to(tensor.dtype)


def bf16_estimate(model: LSANet) -> LSANet:
    """The deployed form of `model` (what the ONNX graph holds, and OpenVINO runs) with its convolutions
    computing as bf16 hardware does; FP32 in and out. `model` is left unchanged."""
    estimate = fuse(model).eval()
    with torch.no_grad():
        for conv in (m for m in estimate.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.weight.copy_(_rounded(conv.weight))
            if conv.bias is not None:
                conv.bias.copy_(_rounded(conv.bias))
            conv.register_forward_pre_hook(lambda _conv, inputs: tuple(_rounded(x) for x in inputs))
            conv.register_forward_hook(lambda _conv, _inputs, output: _rounded(output))
    return estimate
