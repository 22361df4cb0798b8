"""metrics.py: PSNR against its formula, MS-SSIM against pytorch_msssim and on small frames."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim as reference_ms_ssim

from pfnr_codec.errors import InputError
from pfnr_codec.metrics import PSNR_CAP_DB, bpp, ms_ssim, ms_ssim_levels, psnr, psnr_per_frame


def textured(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth structure plus texture, so MS-SSIM has something to measure."""
    rng = np.random.default_rng(seed)
    _, y, x = np.mgrid[0:t, 0:h, 0:w].astype(np.float64)
    base = 128 + 70 * np.sin(x / 5 + y / 7)[..., None] + rng.normal(0, 20, (t, h, w, 3))
    return np.clip(base.round(), 0, 255).astype(np.uint8)


def add_noise(frames: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = frames.astype(np.float64) + rng.normal(0, sigma, frames.shape)
    return np.clip(noisy.round(), 0, 255).astype(np.uint8)


def test_psnr_identical_is_capped() -> None:
    a = textured(3, 17, 19)
    assert psnr_per_frame(a, a).tolist() == [PSNR_CAP_DB] * 3
    assert psnr(a, a) == PSNR_CAP_DB


def test_psnr_matches_formula_per_frame() -> None:
    a = textured(4, 21, 26)
    b = a.copy()
    b[0, 0, 0, 0] ^= 1  # tiny error: a very high but finite PSNR
    b[1:] = add_noise(a[1:], 5.0)
    b[3] = add_noise(a[3], 12.0, seed=2)
    per_frame = psnr_per_frame(a, b)
    for t in range(4):
        mse = np.mean((a[t].astype(np.float64) - b[t]) ** 2)
        assert per_frame[t] == pytest.approx(min(PSNR_CAP_DB, 10 * np.log10(255**2 / mse)))
    assert per_frame.dtype == np.float64
    assert per_frame[3] < per_frame[1] < per_frame[0]
    assert psnr(a, b) == pytest.approx(per_frame.mean())


def test_ms_ssim_matches_pytorch_msssim_on_large_frames() -> None:
    a = textured(3, 162, 170)
    b = add_noise(a, 15.0)
    ours = ms_ssim(a, b, batch=2)
    x, y = (torch.from_numpy(v).permute(0, 3, 1, 2).float() for v in (a, b))
    theirs = float(reference_ms_ssim(x, y, data_range=255))
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_ms_ssim_identical_and_monotone_in_noise() -> None:
    a = textured(2, 48, 64)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    scores = [ms_ssim(a, add_noise(a, sigma)) for sigma in (2.0, 8.0, 30.0)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0


@pytest.mark.parametrize("h, w", [(16, 16), (17, 33), (47, 33), (90, 41)])
def test_ms_ssim_small_frames(h: int, w: int) -> None:
    a = textured(2, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pytorch_msssim warns when a window does not fit
        clean, noisy = ms_ssim(a, a), ms_ssim(a, add_noise(a, 20.0))
    assert clean == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < noisy < 0.99


def test_ms_ssim_levels_rule() -> None:
    assert [ms_ssim_levels(s, 500) for s in (10, 11, 20, 21, 40, 41, 80, 81, 160, 161)] == [
        0, 1, 1, 2, 2, 3, 3, 4, 4, 5,
    ]  # fmt: skip
    assert ms_ssim_levels(2000, 1000) == 5
    with pytest.raises(InputError, match="11x11"):
        ms_ssim(textured(1, 10, 30), textured(1, 10, 30))


def test_shape_and_type_mismatch() -> None:
    a = textured(2, 16, 16)
    for b in (a[:1], a[:, :15], a.astype(np.float32), a[..., :2]):
        for metric in (psnr, psnr_per_frame, ms_ssim):
            with pytest.raises(InputError):
                metric(a, b)


def test_bpp() -> None:
    assert bpp(1000, 4, 10, 20) == pytest.approx(1000 * 8 / (4 * 10 * 20))
    assert bpp(0, 1, 1, 1) == 0.0
    with pytest.raises(InputError):
        bpp(10, 0, 10, 10)
