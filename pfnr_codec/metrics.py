"""Quality and rate metrics on uint8 (T, H, W, 3) RGB frames, as the benchmarks report them.

PSNR is RGB PSNR per frame, averaged over frames (the NeRV/PFNR convention), capped at 100 dB so
that identical frames give a finite, averageable number. MS-SSIM follows pytorch_msssim exactly
for frames whose smaller side exceeds 160 pixels and uses fewer scales below that (see ms_ssim).
"""

from __future__ import annotations

import numpy as np
import torch

from pfnr_codec.blur import SSIM_WINDOW, gaussian_blur
from pfnr_codec.errors import InputError

PSNR_CAP_DB = 100.0
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first
MS_SSIM_WINDOW = SSIM_WINDOW
MS_SSIM_BATCH_PIXELS = 1 << 22  # frames measured together: 4 Mpixels, two 1080p frames


def psnr_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 (T,) RGB PSNR of each frame pair in dB, capped at PSNR_CAP_DB."""
    _check_pair(a, b)
    out = np.empty(a.shape[0], dtype=np.float64)
    for t in range(a.shape[0]):  # frame by frame: no (T, H, W, 3) float64 temporary
        diff = a[t].astype(np.float64) - b[t].astype(np.float64)
        mse = float(np.mean(diff * diff))
        out[t] = PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * np.log10(255.0**2 / mse))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the per-frame RGB PSNR (dB)."""
    return float(np.mean(psnr_per_frame(a, b)))


def ms_ssim_levels(height: int, width: int) -> int:
    """How many MS-SSIM scales fit a frame: the most (up to 5) with min side > 10 * 2**(levels-1).

    Each scale halves the frame and the 11-tap window must fit the coarsest one, the same rule
    pytorch_msssim asserts for 5 scales (min side > 160). Frames under 11 pixels have no scale.
    """
    side = min(height, width)
    levels = 0
    while levels < len(MS_SSIM_WEIGHTS) and side > (MS_SSIM_WINDOW - 1) * 2**levels:
        levels += 1
    return levels


def ms_ssim(a: np.ndarray, b: np.ndarray, batch: int = 8) -> float:
    """Mean MS-SSIM over frames, RGB channels averaged, data range 255.

    Small frames keep the first (finest) `ms_ssim_levels` scales and renormalise their standard
    weights to sum to one; with one scale this is plain SSIM. For frames over 160 pixels on the
    smaller side it equals pytorch_msssim.ms_ssim. Frames under 11x11 raise InputError.
    """
    _check_pair(a, b)
    levels = ms_ssim_levels(a.shape[1], a.shape[2])
    if levels == 0:
        raise InputError(f"MS-SSIM needs frames of at least 11x11 pixels, got {_size(a)}")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float32)
    weights = (weights / weights.sum()).view(-1, 1, 1)  # (levels, 1, 1)
    # The five local statistics of a batch take 15 float maps a frame: bound the pixels at once.
    batch = max(1, min(batch, MS_SSIM_BATCH_PIXELS // (a.shape[1] * a.shape[2])))
    total = 0.0
    with torch.no_grad():
        for i in range(0, a.shape[0], batch):
            x, y = _to_float(a[i : i + batch]), _to_float(b[i : i + batch])  # (B, 3, H, W)
            total += float(_ms_ssim_batch(x, y, weights).sum())
    return total / a.shape[0]


def bpp(num_bytes: int, frames: int, height: int, width: int) -> float:
    """Bits per pixel: num_bytes * 8 / (frames * height * width)."""
    pixels = frames * height * width
    if pixels <= 0 or num_bytes < 0:
        raise InputError(f"bpp needs a positive pixel count and bytes >= 0, got {num_bytes} bytes, "
                         f"{frames} frames of {width}x{height}")  # fmt: skip
    return num_bytes * 8 / pixels


def _ms_ssim_batch(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) MS-SSIM: pytorch_msssim's per-scale loop, without its fixed five-scale size check."""
    levels = weights.shape[0]
    values = []
    for level in range(levels):
        ssim_per_channel, cs = _ssim_and_contrast(x, y, data_range=255.0)
        if level < levels - 1:
            values.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = torch.nn.functional.avg_pool2d(x, kernel_size=2, padding=padding)
            y = torch.nn.functional.avg_pool2d(y, kernel_size=2, padding=padding)
    values.append(torch.relu(ssim_per_channel))
    stacked = torch.stack(values, dim=0)  # (levels, B, 3)
    return torch.prod(stacked**weights, dim=0).mean(dim=1)


def _ssim_and_contrast(
    x: torch.Tensor, y: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) mean SSIM and contrast-structure maps, pytorch_msssim's formulas; the five local
    statistics go through one blur call (its depthwise filter on NCHW frames is the slow one)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    stats = torch.cat([x, y, x * x, y * y, x * y], 1)
    mu_x, mu_y, xx, yy, xy = gaussian_blur(stats, SSIM_WINDOW).chunk(5, 1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    cs_map = (2 * (xy - mu_xy) + c2) / ((xx - mu_xx) + (yy - mu_yy) + c2)
    ssim_map = ((2 * mu_xy + c1) / (mu_xx + mu_yy + c1)) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _to_float(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


def _size(a: np.ndarray) -> str:
    return f"{a.shape[2]}x{a.shape[1]}"


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    for name, x in (("first", a), ("second", b)):
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            found = getattr(x, "shape", type(x).__name__), getattr(x, "dtype", "")
            raise InputError(f"{name} video must be uint8 (T, H, W, 3), got {found}")
    if a.shape != b.shape:
        raise InputError(f"videos differ in shape: {a.shape} vs {b.shape}")
    if a.shape[0] == 0:
        raise InputError("videos have no frames")
