"""The canary's judgement (core/canary.py): what a backend's output for the canary input must be to pass, per
precision and without a reference, and what counts as a canary file. Outputs are made to miss by known
amounts, on values in the middle of [0, 1] so that clamping changes nothing unless a test means it to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.canary import PLAUSIBLE_PSNR, canary_input, judge, read_canary, shrink, write_canary
from core.thresholds import THRESHOLDS

RNG = np.random.default_rng(7)
INPUTS = RNG.uniform(0.2, 0.8, (1, 3, 8, 8)).astype(np.float32)


def nearest_x4(batch: np.ndarray) -> np.ndarray:
    return batch.repeat(4, axis=2).repeat(4, axis=3)


REFERENCE = nearest_x4(INPUTS)


def uniform(delta: float) -> np.ndarray:
    """Every value `delta` off the reference: max abs = delta, PSNR = 20 log10(1 / delta)."""
    return REFERENCE + np.float32(delta)


def one_value(delta: float) -> np.ndarray:
    """One value `delta` off: max abs = delta at a PSNR far above every floor."""
    out = REFERENCE.copy()
    out[0, 2, 5, 11] += np.float32(delta)
    return out


def test_a_matching_output_passes_at_every_precision() -> None:
    for precision in ("fp32", "fp16", "bf16"):
        assert judge(REFERENCE.copy(), INPUTS, REFERENCE, precision) is None


@pytest.mark.parametrize("reference", [REFERENCE, None], ids=["reference", "plausibility"])
def test_the_shape_must_be_x4_rgb(reference) -> None:
    reason = judge(REFERENCE[:, :, ::2, ::2], INPUTS, reference, "fp32")
    assert reason == "returned shape (1, 3, 16, 16) for input (1, 3, 8, 8), expected (1, 3, 32, 32) (not an x4 RGB model)"
    assert "not an x4 RGB model" in judge(REFERENCE[:, :1], INPUTS, reference, "fp16")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("reference", [REFERENCE, None], ids=["reference", "plausibility"])
def test_nan_or_inf_fails_whatever_else(reference, bad) -> None:
    out = REFERENCE.copy()
    out[0, 0, 3, 3] = out[0, 1, 30, 2] = bad
    assert judge(out, INPUTS, reference, "fp16") == "returned 2 NaN/Inf values"


def test_fp32_is_held_to_the_gate_bound_unclamped() -> None:
    bound = THRESHOLDS.fp32_max_abs  # 1e-4; 10% either side is far beyond float32 rounding at 0.8 (6e-8)
    assert judge(uniform(0.9 * bound), INPUTS, REFERENCE, "fp32") is None
    assert judge(one_value(-1.1 * bound), INPUTS, REFERENCE, "fp32") == "differs from the exported FP32 reference by 0.00011 (allowed 0.0001)"
    # Unclamped: a reference above 1 that the output clamps is a difference in FP32 (the same maths must give
    # the same raw values), none in FP16 (only what an image shows is compared).
    over = REFERENCE.copy()
    over[0, 0, :4, :4] = 1.25
    assert "by 0.25" in judge(np.clip(over, 0, 1), INPUTS, over, "fp32")
    assert judge(np.clip(over, 0, 1), INPUTS, over, "fp16") is None


@pytest.mark.parametrize(
    ("precision", "passes", "fails", "why"),
    [
        # FP16: at most 2/255 anywhere, and 55 dB overall.
        ("fp16", one_value(1.9 / 255), one_value(2.1 / 255), "max 2.10/255"),
        ("fp16", uniform(0.4 / 255), uniform(0.9 / 255), "49.0 dB"),  # 0.4/255: 56.1 dB; 0.9/255: 49.0 dB
        # bf16: at most 10/255, and 48 dB.
        ("bf16", one_value(9.5 / 255), one_value(10.5 / 255), "max 10.50/255"),
        ("bf16", uniform(0.9 / 255), uniform(1.1 / 255), "47.3 dB"),  # 49.0 dB passes here, 47.3 dB does not
    ],
    ids=["fp16-max", "fp16-psnr", "bf16-max", "bf16-psnr"],
)
def test_reduced_precisions_are_held_to_their_own_bounds(precision, passes, fails, why) -> None:
    assert judge(passes, INPUTS, REFERENCE, precision) is None
    reason = judge(fails, INPUTS, REFERENCE, precision)
    floor, ceiling = (THRESHOLDS.bf16_min_psnr, THRESHOLDS.bf16_max_abs) if precision == "bf16" else (THRESHOLDS.fp16_min_psnr, THRESHOLDS.fp16_max_abs)
    assert reason is not None and why in reason and f"(allowed >= {floor} dB, <= {ceiling * 255:g}/255 for {precision})" in reason


def test_without_a_reference_the_output_shrunk_back_must_resemble_the_input() -> None:
    assert judge(REFERENCE.copy(), INPUTS, None, "fp32") is None  # shrinks back exactly: infinite PSNR
    # Shrunk back 0.025 off everywhere is 32.0 dB, 0.04 off is 28.0 dB: either side of the 30 dB floor.
    assert PLAUSIBLE_PSNR == 30.0
    assert judge(uniform(0.025), INPUTS, None, "fp16") is None
    reason = judge(uniform(0.04), INPUTS, None, "fp16")
    assert reason == "output shrunk x1/4 is 28.0 dB from its input, expected >= 30.0 dB (not a working x4 model)"
    grey = np.full_like(REFERENCE, 0.5)
    assert "not a working x4 model" in judge(grey, INPUTS, None, "fp32")


def test_shrink_averages_each_4x4_block() -> None:
    out = np.arange(2 * 3 * 8 * 12, dtype=np.float32).reshape(2, 3, 8, 12)
    small = shrink(out)
    assert small.shape == (2, 3, 2, 3) and small[1, 2, 1, 2] == out[1, 2, 4:8, 8:12].mean()


def test_the_canary_input_is_deterministic_and_in_range() -> None:
    first, second = canary_input(), canary_input()
    assert first.shape == (1, 3, 32, 64) and first.dtype == np.float32
    assert np.array_equal(first, second) and 0.0 <= first.min() and first.max() <= 1.0


# Canary files


def test_a_canary_file_reads_back_what_was_written(tmp_path: Path) -> None:
    write_canary(tmp_path / "c.npz", INPUTS.astype(np.float64), REFERENCE)
    inputs, reference = read_canary(tmp_path / "c.npz")
    assert inputs.dtype == reference.dtype == np.float32
    assert np.array_equal(inputs, INPUTS) and np.array_equal(reference, REFERENCE)


@pytest.mark.parametrize(
    ("arrays", "why"),
    [
        (None, "not a canary file"),  # not an .npz at all
        ({"input": INPUTS}, "not a canary file"),  # no reference
        ({"input": INPUTS, "output": REFERENCE[:, :, ::2, ::2]}, r"shapes \(1, 3, 8, 8\) -> \(1, 3, 16, 16\)"),
        ({"input": INPUTS[0], "output": REFERENCE}, "shapes"),
        ({"input": INPUTS, "output": np.where(REFERENCE > 0.5, np.nan, REFERENCE)}, r"NaN or Inf values"),  # would pass every comparison
        ({"input": INPUTS, "output": np.array([{"code": "run me"}], dtype=object)}, "not a canary file"),  # never unpickled
    ],
    ids=["not-npz", "no-output", "x2-reference", "no-batch-axis", "nan-reference", "pickled"],
)
def test_what_is_not_a_canary_file_is_refused(tmp_path: Path, arrays, why) -> None:
    path = tmp_path / "c.npz"
    if arrays is None:
        path.write_bytes(b"not an npz file")
    else:
        np.savez(path, **arrays)
    with pytest.raises(ValueError, match=why):
        read_canary(path)


def test_a_truncated_canary_file_is_refused_as_not_one(tmp_path: Path) -> None:
    write_canary(tmp_path / "c.npz", INPUTS, REFERENCE)
    data = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "c.npz").write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match="not a canary file"):
        read_canary(tmp_path / "c.npz")
