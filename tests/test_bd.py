"""Bjøntegaard metrics: the properties that define them, on seeded synthetic RD curves."""

import numpy as np
import pytest

from benchmarks.bd import _pchip_integral, bd_psnr, bd_rate, overlap, pareto_front
from pfnr_codec.errors import InputError


def _curve(seed: int, n: int = 5):
    """An increasing PSNR(bpp) curve like a real codec's, at seeded irregular rates."""
    rng = np.random.default_rng(seed)
    rate = np.sort(rng.uniform(0.02, 0.5, n))
    psnr = 30.0 + 4.0 * np.log2(rate / rate[0]) - 0.3 * np.log2(rate / rate[0]) ** 2
    return rate, psnr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_curves_give_zero(seed):
    rate, psnr = _curve(seed)
    assert bd_rate(rate, psnr, rate, psnr) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(rate, psnr, rate, psnr) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_scaled_rates_give_that_bd_rate(factor):
    rate, psnr = _curve(3)
    got = bd_rate(rate, psnr, rate * factor, psnr)
    assert got == pytest.approx((factor - 1.0) * 100.0, abs=0.5)


def test_psnr_shift_gives_that_bd_psnr():
    rate, psnr = _curve(4)
    assert bd_psnr(rate, psnr, rate, psnr + 1.0) == pytest.approx(1.0, abs=1e-9)
    # Better quality at equal rate means fewer bits at equal quality.
    assert bd_rate(rate, psnr, rate, psnr + 1.0) < 0


def test_order_of_points_does_not_matter():
    rate, psnr = _curve(5)
    perm = np.random.default_rng(5).permutation(len(rate))
    a = bd_rate(rate, psnr, rate * 0.9, psnr + 0.2)
    b = bd_rate(rate[perm], psnr[perm], (rate * 0.9)[::-1], (psnr + 0.2)[::-1])
    assert a == pytest.approx(b, rel=1e-12)


def test_pchip_integral_is_exact_for_lines_and_matches_fine_sampling():
    x = np.array([0.0, 1.0, 2.5, 4.0])
    assert _pchip_integral(x, 2 * x + 1, 0.5, 3.0) == pytest.approx((9 + 3) - (0.25 + 0.5))
    # Monotone data: the interpolant stays between the knots, so its integral is bracketed.
    y = np.array([0.0, 0.2, 3.0, 3.1])
    total = _pchip_integral(x, y, 0.0, 4.0)
    lower = np.sum(np.diff(x) * y[:-1])
    upper = np.sum(np.diff(x) * y[1:])
    assert lower < total < upper


def test_non_overlapping_curves_are_rejected():
    rate, psnr = _curve(6)
    with pytest.raises(InputError, match="overlap"):
        bd_rate(rate, psnr, rate, psnr + 100.0)


def test_pareto_front_drops_dominated_points():
    rate = np.array([0.1, 0.2, 0.15, 0.3, 0.25])
    psnr = np.array([30.0, 33.0, 29.0, 34.0, 32.0])
    front = pareto_front(rate, psnr)
    assert list(front) == [0, 1, 3]
    assert np.all(np.diff(rate[front]) > 0) and np.all(np.diff(psnr[front]) > 0)


def test_overlap_is_the_shared_range():
    assert overlap([30.0, 34.0, 38.0], [36.0, 40.0]) == pytest.approx(2.0)
    assert overlap([30.0, 34.0], [35.0, 40.0]) == 0.0
    rate, psnr = _curve(7)
    assert overlap(psnr, psnr) == pytest.approx(psnr.max() - psnr.min())
