"""The network: its two forms, its size, its input contract and its fidelity on real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.metrics import y_psnr
from export.model import LSANet
from export.parity import to_nchw
from tests.conftest import to_hwc, to_uint8

# ../shared/data/README.md: the challenge's own implementation with the public checkpoint (params_ema).
SET5_REFERENCE_Y = {
    "img_001_SRF_4_LR.png": 33.65,
    "img_002_SRF_4_LR.png": 34.64,
    "img_003_SRF_4_LR.png": 28.11,
    "img_004_SRF_4_LR.png": 32.98,
    "img_005_SRF_4_LR.png": 30.54,
}


def test_parameter_counts() -> None:
    assert sum(p.numel() for p in LSANet(deploy=True).parameters()) == 138_492
    assert sum(p.numel() for p in LSANet(deploy=False).parameters()) == 325_116


def test_public_checkpoint_loads_strictly_into_deployed_form(public_model) -> None:
    assert public_model.deploy
    assert not public_model.training
    assert sum(p.numel() for p in public_model.parameters()) == 138_492


@pytest.mark.parametrize("shape", [(1, 3, 15, 15), (2, 3, 17, 23)])
def test_output_is_four_times_the_input(shape: tuple[int, ...]) -> None:
    with torch.no_grad():
        out = LSANet(deploy=True).eval()(torch.rand(shape))
    assert out.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)


@pytest.mark.parametrize("shape", [(1, 3, 14, 20), (1, 3, 20, 14), (1, 3, 1, 1)])
def test_too_small_input_is_a_clear_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"at least 15x15 pixels.*got"):
        LSANet(deploy=True)(torch.rand(shape))


def test_wrong_channel_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        LSANet(deploy=True)(torch.rand(1, 4, 32, 32))


def test_set5_reproduces_reference_psnr(public_model, set5) -> None:
    measured = {}
    for name, lr, hr in set5:
        with torch.no_grad():
            sr = public_model(torch.from_numpy(to_nchw(lr))).numpy()
        measured[name] = y_psnr(to_uint8(to_hwc(sr)), hr)
    for name, reference in SET5_REFERENCE_Y.items():
        # The reference table is rounded to 0.01 dB; a faithful port lands within that rounding.
        assert abs(measured[name] - reference) <= 0.01, (name, measured[name])
    assert round(float(np.mean(list(measured.values()))), 2) == 31.98
