"""What the parity gate and the runtime's self-check (canary) accept, importable without torch or onnx."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """What the gate accepts; each number's reason is beside it."""

    # FP32 ONNX vs PyTorch, unclamped: the same float32 maths in another order. Measured <= 8e-6 on photos,
    # 4.3e-5 on uniform noise; 1e-4 leaves 2x margin and is still ~800x below one 8-bit grey level.
    fp32_max_abs: float = 1e-4
    # FP16 vs FP32 on photos and smooth fields, clamped: the design's floor. Measured >= 74.8 dB, <= 1.31/255.
    fp16_min_psnr: float = 55.0
    fp16_max_abs: float = 2 / 255
    # bf16 (OpenVINO on CPUs with bfloat16 arithmetic) vs FP32, clamped, at the runtime's self-check: bfloat16
    # keeps 8 mantissa bits to FP16's 11. Measured (BENCHMARKS.md "bf16 on a CPU that has it"): the canary
    # 55.1 dB / 7.01/255 through OpenVINO bf16, 52.3-55.7 dB on colour photos. 48 dB and 10/255 leave ~4 dB
    # and 1.4x margin on the canary and still catch what it is for: one damaged convolution is >= 14/255 off.
    # The max abs bound is the canary's only: on photos a few pixels reach 16-20/255 (OpenVINO bf16 on
    # astronaut and coffee), so the gate reports bf16 against the PSNR floor.
    bf16_min_psnr: float = 48.0
    bf16_max_abs: float = 10 / 255
    # Chaotic inputs, any pair: pixels off by > 2/255 may be at most this multiple of the fraction that a
    # +-0.5 grey input perturbation moves in FP32 itself, plus 0.2% of pixels. Measured FP16: 0.054 vs
    # 0.083 (checkerboard), 0.144 vs 0.168 (binary noise), 0.0012 vs 0.048 (uniform noise).
    chaotic_ratio: float = 1.5
    chaotic_slack: float = 0.002
    # A backend's 8-bit path (core/boundary.py in its graph or on its device) against its own float path with
    # the host's conversion, in levels: the same float32 operations, and on the CPU the same bytes (ONNX
    # Runtime, PyTorch: tests/test_boundary.py). On a GPU the two are separate runs, which may pick different
    # cuDNN algorithms whose sums differ by float rounding, and a rounding edge is one level (OpenVINO, which
    # fuses the x255 into its last kernels, moved 58 of 3.1 million values of a 256x256 photo tile so).
    # A swapped channel or a wrong scale is off by tens of levels.
    pixel_path_levels: int = 1


THRESHOLDS = Thresholds()
