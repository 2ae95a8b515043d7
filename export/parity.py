"""The parity gate: PyTorch vs FP32 ONNX vs FP16 ONNX (ONNX Runtime, CPU) on the same inputs, plus a
report of what bfloat16 costs.

Inputs: real photos (scikit-image's free photos, downscaled x1/4, plus any the user passes), smooth
synthetic fields, and chaotic synthetic ones (noise, checkerboard). On chaotic inputs LSANet itself is
ill-conditioned: a +-0.5 grey-level change of the input, invisible in 8-bit, moves up to 17% of its FP32
output pixels by more than 2/255, and FP32 differs from FP64 by up to 127/255. No precision can be "exact"
there, so the rule is relative to that sensitivity, measured on the spot (see THRESHOLDS).

bf16 (`upscale.py --bf16`, OpenVINO on CPUs with bfloat16 arithmetic) is reported, not gated: it is an
opt-in that many machines cannot run, and an export that fails it is still good in FP32 and FP16. The
figures come from export/bf16.py's estimate (convolutions as bf16 hardware computes them, the rest in
FP32), the same on every exporting machine whatever its CPU. Its rule here is the bf16 PSNR floor on photos
and smooth fields; chaotic inputs are reported only. The runtime's self-check then holds OpenVINO's real
bf16 to the bf16 bounds on the machine that runs it, and refuses it there if it misses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from core.descriptor import INPUT_NAME
from core.errors import DeployError
from core.metrics import Comparison, compare
from core.thresholds import THRESHOLDS
from export.bf16 import bf16_estimate
from export.hard_inputs import hard_inputs

PHOTOS = ("astronaut", "coffee", "chelsea")
CHAOTIC = ("uniform-noise", "binary-noise", "checkerboard")
SYNTHETIC_SIZE = 48
OFF_LEVEL = 2 / 255
BF16_PAIR = "bf16-vs-fp32"


class ParityError(DeployError):
    """An exported graph does not match the network it came from."""


@dataclass
class PairResult:
    """One comparison of one input, with the rule it was held to and whether it passed."""

    input: str
    kind: str
    pair: str
    comparison: Comparison
    off_fraction: float
    limit: float
    allowed: str
    passed: bool
    gating: bool = True  # False for a reported pair (bf16): its failure does not fail the export

    def as_dict(self) -> dict:
        return {
            "input": self.input,
            "kind": self.kind,
            "pair": self.pair,
            **self.comparison.as_dict(),
            "off_fraction": self.off_fraction,
            "off_fraction_limit": self.limit,
            "allowed": self.allowed,
            "passed": self.passed,
            "gating": self.gating,
        }


@dataclass
class ParityReport:
    results: list[PairResult] = field(default_factory=list)

    @property
    def failures(self) -> list[PairResult]:
        """Failed comparisons that fail the export."""
        return [r for r in self.results if not r.passed and r.gating]

    @property
    def reported_failures(self) -> list[PairResult]:
        """Failed comparisons of reported pairs (bf16): the export stands, the precision will be refused."""
        return [r for r in self.results if not r.passed and not r.gating]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per pair and input kind: worst max abs (in 1/255), worst PSNR, NaN/Inf count and, for chaotic
        inputs, the worst ratio of pixels off by > 2/255 to what the rule allows."""
        table: dict[str, dict[str, float]] = {}
        for r in self.results:
            row = table.setdefault(
                f"{r.pair} [{r.kind}]", {"max_abs_255": 0.0, "min_psnr_db": float("inf"), "nonfinite": 0}
            )
            row["max_abs_255"] = max(row["max_abs_255"], r.comparison.max_abs * 255)
            row["min_psnr_db"] = min(row["min_psnr_db"], r.comparison.psnr)
            row["nonfinite"] += r.comparison.nonfinite
            if r.kind == "chaotic":
                row["off_vs_allowed"] = max(row.get("off_vs_allowed", 0.0), r.off_fraction / r.limit)
        return table


def to_nchw(rgb: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 RGB image as the network's 1 x 3 x H x W float32 input in [0, 1]."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)


def photo_inputs() -> dict[str, np.ndarray]:
    """scikit-image's free photos downscaled x1/4 (real LR statistics), as network inputs."""
    import cv2
    from skimage import data

    inputs = {}
    for name in PHOTOS:
        photo = getattr(data, name)()
        small = cv2.resize(photo, (photo.shape[1] // 4, photo.shape[0] // 4), interpolation=cv2.INTER_AREA)
        inputs[name] = to_nchw(small)
    return inputs


def gate_inputs(extra_photos: list[Path] = ()) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (kind, 1x3xHxW float32): photos, smooth and chaotic synthetic inputs."""
    import cv2

    inputs = {name: ("photo", x) for name, x in photo_inputs().items()}
    for path in extra_photos:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ParityError(f"{path}: cannot read this parity image")
        inputs[Path(path).name] = ("photo", to_nchw(image[..., ::-1]))
    for name, x in hard_inputs(SYNTHETIC_SIZE).items():
        inputs[name] = ("chaotic" if name in CHAOTIC else "smooth", x)
    return inputs


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _off_fraction(reference: np.ndarray, test: np.ndarray) -> float:
    if not np.isfinite(test).all():
        return 1.0
    return float((np.abs(np.clip(test, 0, 1) - np.clip(reference, 0, 1)) > OFF_LEVEL).mean())


def _sensitivity(session, x: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of FP32 output pixels moved by > 2/255 when the input moves by up to half a grey level."""
    noise = np.random.default_rng(1).uniform(-0.5 / 255, 0.5 / 255, x.shape).astype(np.float32)
    perturbed = session.run(None, {INPUT_NAME: np.clip(x + noise, 0, 1)})[0]
    return _off_fraction(reference, perturbed)


def _judge(name: str, kind: str, pair: str, ref: np.ndarray, test: np.ndarray, sensitivity: float) -> PairResult:
    t = THRESHOLDS
    raw = compare(ref, test)
    clamped = compare(np.clip(ref, 0, 1), np.clip(test, 0, 1))
    off = _off_fraction(ref, test)
    limit = t.chaotic_ratio * sensitivity + t.chaotic_slack
    if raw.nonfinite:
        allowed, passed = "no NaN/Inf", False
    elif pair == BF16_PAIR:
        # bf16 reaches 14-16/255 on a few pixels of some photos (core/thresholds.py) and is far past the
        # chaotic rule: its rule here is the self-check's PSNR floor, on photos and smooth fields.
        if kind == "chaotic":
            allowed, passed = "reported only", True
        else:
            allowed, passed = f"clamped PSNR >= {t.bf16_min_psnr} dB", clamped.psnr >= t.bf16_min_psnr
    elif kind == "chaotic":
        allowed, passed = f"off-by->2/255 fraction <= {limit:.4f}", off <= limit
    elif pair == "fp32-vs-torch":
        allowed, passed = f"max abs <= {t.fp32_max_abs:g}", raw.max_abs <= t.fp32_max_abs
    else:
        allowed = f"clamped PSNR >= {t.fp16_min_psnr} dB and max abs <= {t.fp16_max_abs * 255:g}/255"
        passed = clamped.psnr >= t.fp16_min_psnr and clamped.max_abs <= t.fp16_max_abs
    shown = raw if raw.nonfinite or (pair == "fp32-vs-torch" and kind != "chaotic") else clamped
    return PairResult(name, kind, pair, shown, off, limit, allowed, passed, gating=pair != BF16_PAIR)


def run_gate(
    model: torch.nn.Module, fp32: onnx.ModelProto, fp16: onnx.ModelProto, extra_photos: list[Path] = ()
) -> ParityReport:
    """Run every input through the three implementations and the bf16 estimate and judge each pair; nothing
    is raised here."""
    s32, s16 = _session(fp32), _session(fp16)
    bf16 = bf16_estimate(model)
    report = ParityReport()
    for name, (kind, x) in gate_inputs(extra_photos).items():
        with torch.no_grad():
            reference = model(torch.from_numpy(x)).numpy()
            out_bf16 = bf16(torch.from_numpy(x)).numpy()
        out32 = s32.run(None, {INPUT_NAME: x})[0]
        out16 = s16.run(None, {INPUT_NAME: x})[0]
        sensitivity = _sensitivity(s32, x, out32) if kind == "chaotic" else 0.0
        report.results.append(_judge(name, kind, "fp32-vs-torch", reference, out32, sensitivity))
        report.results.append(_judge(name, kind, "fp16-vs-fp32", out32, out16, sensitivity))
        report.results.append(_judge(name, kind, BF16_PAIR, out32, out_bf16, sensitivity))
    return report


def enforce(report: ParityReport) -> None:
    """Raise ParityError naming the failed comparisons, if any."""
    if failures := report.failures:
        shown = "; ".join(
            f"{r.pair} on {r.input}: max abs {r.comparison.max_abs * 255:.2f}/255, PSNR {r.comparison.psnr:.1f} dB,"
            f" NaN/Inf {r.comparison.nonfinite}, off {r.off_fraction:.4f} (allowed: {r.allowed})"
            for r in failures[:3]
        )
        raise ParityError(f"parity gate failed ({len(failures)} comparisons): {shown}")
