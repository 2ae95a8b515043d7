"""Memory planning (runtime/memory.py): `--tile 0`'s pass is the largest square whose peak memory fits its
share of what is available, and an image whose result cannot fit is refused before any work. The figure
the system reports is replaced by given ones (monkeypatched `available_bytes`), so every expectation is exact."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ImageError
from runtime import memory
from runtime.backends.base import Limits
from runtime.memory import PASS_BYTES_PER_PIXEL, PASS_SHARE, check_fits, whole_image_side
from runtime.upscaler import tile_config

GIB = 2**30


@pytest.mark.parametrize("available", [8 * GIB, 3 * GIB + 12_345, 10**9, 512 * 2**20])
def test_the_pass_is_the_largest_square_that_fits_its_share(available: int) -> None:
    side = whole_image_side(available=available)
    budget = available * PASS_SHARE
    assert side * side * PASS_BYTES_PER_PIXEL <= budget < (side + 1) ** 2 * PASS_BYTES_PER_PIXEL


def test_eight_gib_plan_a_1024_pass() -> None:
    # Half of 8 GiB at 4 KiB per pixel is 2**20 pixels: 1024 x 1024 (with the constants measured today).
    assert (PASS_SHARE, PASS_BYTES_PER_PIXEL) == (0.5, 4096), "re-derive this figure from the new constants"
    assert whole_image_side(available=8 * GIB) == 1024


@pytest.mark.parametrize("available", [0, 1, 64 * 64 * PASS_BYTES_PER_PIXEL])  # the last: a 45-pixel pass
def test_the_pass_never_drops_below_64(available: int) -> None:
    assert whole_image_side(available=available) == 64


def test_without_an_argument_it_asks_the_system(monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 4 * GIB)
    assert whole_image_side() == 724  # isqrt(2 GiB / 4096 bytes) = isqrt(524288), 512 * sqrt(2) rounded down
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # a system that does not say
    assert whole_image_side() == 2048


def test_tile_zero_is_capped_by_what_the_backend_accepts(monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * GIB)
    assert tile_config(Limits(), tile=0).tile == 1024
    assert tile_config(Limits(max_side=300), tile=0).tile == 300  # a TensorRT profile's largest side
    assert tile_config(Limits(), tile=None).tile == 512 and tile_config(Limits(), tile=100).tile == 100


def test_a_result_that_cannot_fit_is_refused_before_any_work(monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 * GIB)
    check_fits(4000, 4000, 3, 1, "fits.png")  # 16000 x 16000 x 3 bytes = 0.7 GiB
    with pytest.raises(ImageError, match=r"big\.png: its x4 result \(20000x20000, 1\.1 GiB\) needs more memory than the 1\.0 GiB"):
        check_fits(5000, 5000, 3, 1, "big.png")
    with pytest.raises(ImageError, match="2.2 GiB"):  # 16-bit samples take twice the room
        check_fits(5000, 5000, 3, np.dtype(np.uint16).itemsize, "deep.png")
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    check_fits(50_000, 50_000, 4, 2, "unknown.png")  # nothing is refused on a guess
