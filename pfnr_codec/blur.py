"""SSIM's Gaussian window (11 taps, sigma 1.5) as separable depthwise convolutions.

One module for the training loss and the MS-SSIM metric, so both filter the same way. The frames
go channels-last: on a CPU the depthwise kernels run about twice as fast that way, and the
channels-first layout falls back to a slow generic convolution.
"""

from __future__ import annotations

import torch
from pytorch_msssim.ssim import _fspecial_gauss_1d
from torch import Tensor
from torch.nn import functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _blur_kernels(like: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Vertical and horizontal depthwise Gaussian kernels for `like`'s channels."""
    g = _fspecial_gauss_1d(size, SSIM_SIGMA).to(like).flatten()
    c = like.shape[1]
    return g.view(1, 1, size, 1).expand(c, 1, size, 1), g.view(1, 1, 1, size).expand(c, 1, 1, size)


def gaussian_blur(x: Tensor, size: int = SSIM_WINDOW) -> Tensor:
    """Separable 'valid' Gaussian filter over every channel of (B, C, H, W)."""
    vertical, horizontal = _blur_kernels(x, size)
    x = x.contiguous(memory_format=torch.channels_last)
    x = F.conv2d(x, vertical, groups=x.shape[1])
    return F.conv2d(x, horizontal, groups=x.shape[1])


def gaussian_blur_adjoint(y: Tensor, size: int = SSIM_WINDOW) -> Tensor:
    """The transpose of `gaussian_blur`: spreads a 'valid'-sized map back over the input grid.

    On CUDA, `conv_transpose2d` goes through cuDNN's backward-data kernels, which are not
    deterministic, and a seeded training must repeat; there the same map comes from a padded
    forward filter (the kernel is symmetric). On a CPU `conv_transpose2d` is the faster of the two.
    """
    if y.is_cuda:
        return full_gaussian_filter(y, size)
    vertical, horizontal = _blur_kernels(y, size)
    y = F.conv_transpose2d(y, horizontal, groups=y.shape[1])
    return F.conv_transpose2d(y, vertical, groups=y.shape[1])


def full_gaussian_filter(y: Tensor, size: int = SSIM_WINDOW) -> Tensor:
    """'Full' (zero-padded) Gaussian filter: equal to `gaussian_blur_adjoint` for a symmetric kernel."""
    vertical, horizontal = _blur_kernels(y, size)
    y = F.conv2d(y, horizontal, padding=(0, size - 1), groups=y.shape[1])
    return F.conv2d(y, vertical, padding=(size - 1, 0), groups=y.shape[1])
