"""The self-check a backend passes before it may upscale anything (the canary), importable without torch.

At export the canary input (a 32x32 crop of a real photo beside a smooth synthetic pattern, 32x64 in all)
and the FP32 PyTorch output for it are stored as an artifact of the manifest. When the runtime loads a
backend it runs the same input through it and refuses the backend if the result misses the reference by
more than the export's parity gate allows for that precision. This catches what a sha256 cannot: a
tampered graph whose manifest was updated to match, an engine that misbehaves on a user's GPU or driver.
Without a reference (a bare --onnx or --engine) only what any x4 LSANet must do is checked: the output
shape, finite values, and that the output shrunk back x1/4 resembles the input (PLAUSIBLE_PSNR), which
catches gross damage only.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.descriptor import SCALE
from core.files import atomic_path
from core.metrics import psnr
from core.thresholds import THRESHOLDS

CANARY_FILE = "lsanet_x4_canary.npz"
SIDE = 32
# The public model's output shrunk x1/4 (area mean) is 40.6 dB from its input on the canary; an all-grey
# output is 10.5 dB. Negating one convolution of the 53 drops 10 of them below 30 dB (down to 4 dB), the
# others stay at up to 45 dB. Against the stored reference every one of them is off by >= 0.055 (14/255),
# far outside the FP32 and FP16 bounds: the reference catches all, this bound only gross damage.
# (`python -m bench.canary_strength --ckpt ...` gives these figures.)
PLAUSIBLE_PSNR = 30.0


# A 32x32 crop of scikit-image's astronaut (NASA, public domain) shrunk x1/4 with OpenCV's area filter, her
# face and hair: stored as a PNG beside this module, so that neither the runtime nor the exporter needs
# scikit-image for it.
PHOTO = Path(__file__).with_name("canary_photo.png")


def canary_input() -> np.ndarray:
    """1 x 3 x 32 x 64 float32 in [0, 1]: the PHOTO crop beside a smooth colour field. Deterministic; chaotic
    patterns are left out on purpose, since LSANet is ill-conditioned on them (export/parity.py) and a
    self-check must not be flaky."""
    import cv2

    crop = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / (SIDE - 1)
    field = np.stack([xx, yy, 0.5 + 0.4 * np.sin(3.0 * (xx + yy))], axis=2)
    image = np.concatenate([crop, field], axis=1)
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


def write_canary(path: Path, inputs: np.ndarray, reference: np.ndarray) -> None:
    """Store the canary input and its FP32 reference output (an .npz with no pickled objects)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, input=inputs.astype(np.float32), output=reference.astype(np.float32))


def read_canary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(input, reference output) from a canary file; ValueError if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs, reference = data["input"], data["output"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # np.load is a zip reader
        raise ValueError(f"{path}: not a canary file ({exc})") from None
    n, c, h, w = inputs.shape if inputs.ndim == 4 else (0, 0, 0, 0)
    if (n, c) != (1, 3) or reference.shape != (1, 3, h * SCALE, w * SCALE):
        raise ValueError(f"{path}: not a canary file (shapes {inputs.shape} -> {reference.shape})")
    if not (np.isfinite(inputs).all() and np.isfinite(reference).all()):  # NaN would pass every comparison
        raise ValueError(f"{path}: not a canary file (NaN or Inf values)")
    return inputs.astype(np.float32), reference.astype(np.float32)


def shrink(output: np.ndarray) -> np.ndarray:
    """An N x 3 x 4H x 4W output averaged over 4x4 blocks back to N x 3 x H x W."""
    n, c, h, w = output.shape
    return output.reshape(n, c, h // SCALE, SCALE, w // SCALE, SCALE).mean(axis=(3, 5))


def judge(output: np.ndarray, inputs: np.ndarray, reference: np.ndarray | None, precision: str) -> str | None:
    """None if `output` (a backend's result for `inputs`) passes, else the one-line reason it does not.

    With a reference: FP32 must match to the gate's FP32 bound, bf16 to its bf16 bounds, FP16 to the FP16 ones.
    """
    n, c, h, w = inputs.shape
    expected = (n, c, h * SCALE, w * SCALE)
    if tuple(output.shape) != expected:
        return f"returned shape {tuple(output.shape)} for input {tuple(inputs.shape)}, expected {expected} (not an x4 RGB model)"
    if not np.isfinite(output).all():
        return f"returned {int((~np.isfinite(output)).sum())} NaN/Inf values"
    if reference is None:
        shrunk = psnr(np.clip(shrink(output), 0, 1), inputs)
        if shrunk < PLAUSIBLE_PSNR:
            return f"output shrunk x1/4 is {shrunk:.1f} dB from its input, expected >= {PLAUSIBLE_PSNR} dB (not a working x4 model)"
        return None
    t = THRESHOLDS
    if precision == "fp32":
        max_abs = float(np.abs(output - reference).max())
        if max_abs > t.fp32_max_abs:
            return f"differs from the exported FP32 reference by {max_abs:.2g} (allowed {t.fp32_max_abs:g})"
        return None
    clipped, expected = np.clip(output, 0, 1), np.clip(reference, 0, 1)
    max_abs = float(np.abs(clipped - expected).max())
    db = psnr(clipped, expected)
    floor, ceiling = (t.bf16_min_psnr, t.bf16_max_abs) if precision == "bf16" else (t.fp16_min_psnr, t.fp16_max_abs)
    if db < floor or max_abs > ceiling:
        return (
            f"{db:.1f} dB and max {max_abs * 255:.2f}/255 from the exported reference"
            f" (allowed >= {floor} dB, <= {ceiling * 255:g}/255 for {precision})"
        )
    return None
