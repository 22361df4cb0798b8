"""Bjøntegaard delta metrics: average rate and quality gaps between two RD curves.

This follows the piecewise cubic Hermite (PCHIP) variant used by the JVET common test conditions
spreadsheet and the ``bjontegaard`` Python package (method "pchip"): interpolate with monotone
cubic Hermite pieces (Fritsch-Carlson slopes, as ``scipy.interpolate.PchipInterpolator``) and
integrate exactly over the overlap of the two curves. The older VCEG-M33 fit of one cubic
polynomial overshoots between points; PCHIP does not. numpy only: scipy is not a dependency.

BD-rate is the average rate difference (percent) of the test curve against the anchor at equal
quality, negative meaning the test codec needs fewer bits. BD-PSNR is the average quality
difference (dB) at equal rate, positive meaning the test codec is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pfnr_codec.errors import InputError


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slopes at the knots, as SciPy's PchipInterpolator computes them (shape-preserving)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    if n == 2:
        d[:] = delta[0]
        return d
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] <= 0:
            d[k] = 0.0
        else:
            w1 = 2 * h[k] + h[k - 1]
            w2 = h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    d[0] = _edge_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _edge_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _edge_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """One-sided three-point end slope, clipped so the end piece stays monotone."""
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return d


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral over [lo, hi] (inside [x0, xn]) of the PCHIP interpolant through (x, y)."""
    d = _pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(x[k], lo), min(x[k + 1], hi)
        if b <= a:
            continue
        total += _hermite_integral(x[k], x[k + 1], y[k], y[k + 1], d[k], d[k + 1], a, b)
    return total


def _hermite_integral(x0, x1, y0, y1, d0, d1, a, b) -> float:
    """Integral over [a, b] of the cubic Hermite piece on [x0, x1] (power form in t = x - x0)."""
    h = x1 - x0
    m = (y1 - y0) / h
    c2 = (3 * m - 2 * d0 - d1) / h
    c3 = (d0 + d1 - 2 * m) / (h * h)

    def antiderivative(t: float) -> float:
        return y0 * t + d0 * t**2 / 2 + c2 * t**3 / 3 + c3 * t**4 / 4

    return antiderivative(b - x0) - antiderivative(a - x0)


def _prepare(rate: Sequence[float], quality: Sequence[float], name: str):
    """Sorted (log-rate, quality) arrays; errors name the curve that cannot be used."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.ndim != 1 or r.shape != q.shape or len(r) < 2:
        raise InputError(
            f"{name} curve: expected >= 2 matching (rate, quality) points, got {r.shape}/{q.shape}"
        )
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q)) and np.all(r > 0)):
        raise InputError(f"{name} curve: rates must be positive and values finite")
    return np.log(r), q


def _integrate_gap(xa, ya, xt, yt, what: str) -> float:
    """Mean of (test - anchor) over the overlap of two curves given as y(x)."""
    ia, it = np.argsort(xa), np.argsort(xt)
    xa, ya, xt, yt = xa[ia], ya[ia], xt[it], yt[it]
    if np.any(np.diff(xa) <= 0) or np.any(np.diff(xt) <= 0):
        raise InputError(f"BD-{what}: expected distinct values along the integration axis")
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if hi <= lo:
        raise InputError(
            f"BD-{what}: curves do not overlap (anchor {xa[0]:.4g}..{xa[-1]:.4g}, "
            f"test {xt[0]:.4g}..{xt[-1]:.4g})"
        )
    gap = _pchip_integral(xt, yt, lo, hi) - _pchip_integral(xa, ya, lo, hi)
    return gap / (hi - lo)


def bd_rate(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
) -> float:
    """Average rate change of test vs anchor at equal PSNR, in percent (-20.0 = 20% fewer bits).

    Log-rate is interpolated as a function of PSNR over the PSNR range both curves cover.
    """
    la, qa = _prepare(anchor_rate, anchor_psnr, "anchor")
    lt, qt = _prepare(test_rate, test_psnr, "test")
    mean_log_gap = _integrate_gap(qa, la, qt, lt, "rate")
    return float((np.exp(mean_log_gap) - 1.0) * 100.0)


def bd_psnr(
    anchor_rate: Sequence[float],
    anchor_psnr: Sequence[float],
    test_rate: Sequence[float],
    test_psnr: Sequence[float],
) -> float:
    """Average PSNR change of test vs anchor at equal rate, in dB, over the shared log-rate span."""
    la, qa = _prepare(anchor_rate, anchor_psnr, "anchor")
    lt, qt = _prepare(test_rate, test_psnr, "test")
    return float(_integrate_gap(la, qa, lt, qt, "PSNR"))


def pareto_front(rate: Sequence[float], psnr: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point beats (lower or equal rate and higher PSNR), by rate.

    A sweep over several settings gives a cloud, not a curve; BD metrics need the curve a user
    would pick from, i.e. the lower-right envelope.
    """
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(psnr, dtype=np.float64)
    order = np.lexsort((-q, r))
    keep, best = [], -np.inf
    for i in order:
        if q[i] > best:
            keep.append(i)
            best = q[i]
    return np.asarray(keep, dtype=np.int64)


def overlap(anchor: Sequence[float], test: Sequence[float]) -> float:
    """Length of the shared range of two curves along one axis (0 when they do not meet).

    A BD number averages over this range only: report it, since a BD-rate over a 0.3 dB sliver
    of PSNR says much less than one over 6 dB.
    """
    a = np.asarray(anchor, dtype=np.float64)
    t = np.asarray(test, dtype=np.float64)
    return float(max(0.0, min(a.max(), t.max()) - max(a.min(), t.min())))
