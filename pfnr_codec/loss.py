"""The training loss: 0.7 * L1 + 0.3 * (1 - SSIM), with SSIM as pytorch_msssim defines it.

SSIM is the costliest part of a CPU training step after the network's own convolutions, so it is
written out here with its gradient in closed form: the five local statistics go through one blur
call, and the backward pass blurs only the three maps that depend on the output (the target's
statistics need no gradient) instead of letting autograd retrace a dozen elementwise operations.
The tests check value and gradient against pytorch_msssim in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .blur import SSIM_WINDOW, gaussian_blur, gaussian_blur_adjoint

SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # for data range 1


class _SSIM(torch.autograd.Function):
    """Mean SSIM of `output` against a constant `target`, gradient to `output` only."""

    @staticmethod
    def forward(ctx, output: Tensor, target: Tensor, size: int) -> Tensor:  # noqa: ANN001
        stats = torch.cat([output, target, output * output, target * target, output * target], 1)
        mu_x, mu_y, xx, yy, xy = gaussian_blur(stats, size).chunk(5, 1)
        mu_xy = mu_x * mu_y
        mu_sq = mu_x * mu_x + mu_y * mu_y
        luminance_den = mu_sq + SSIM_C1
        contrast_den = xx + yy - mu_sq + SSIM_C2
        luminance = (2 * mu_xy + SSIM_C1) / luminance_den
        contrast = (2 * (xy - mu_xy) + SSIM_C2) / contrast_den
        ctx.save_for_backward(
            output, target, mu_x, mu_y, luminance_den, contrast_den, luminance, contrast
        )
        ctx.size = size
        return (luminance * contrast).mean()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: ANN001
        saved = ctx.saved_tensors
        output, target, mu_x, mu_y, luminance_den, contrast_den, luminance, contrast = saved
        scale = grad / luminance.numel()
        # Partial derivatives of the SSIM map by the blurred statistics that depend on the output.
        d_mu_x = 2 * (
            contrast * (mu_y - luminance * mu_x) / luminance_den
            + luminance * (mu_x * contrast - mu_y) / contrast_den
        )
        d_xy = 2 * luminance / contrast_den
        d_xx = -luminance * contrast / contrast_den
        spread = gaussian_blur_adjoint(torch.cat([d_mu_x, d_xx, d_xy], 1) * scale, ctx.size)
        g_mu, g_xx, g_xy = spread.chunk(3, 1)
        return g_mu + 2 * output * g_xx + target * g_xy, None, None


def ssim(output: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM in the form of pytorch_msssim (11-tap Gaussian, no padding), data range 1.

    The target is treated as a constant: no gradient flows to it.
    """
    size = min(SSIM_WINDOW, *output.shape[-2:])
    size -= 1 - size % 2
    return _SSIM.apply(output, target.detach(), size)


def reconstruction_loss(output: Tensor, target: Tensor) -> Tensor:
    """0.7 * L1 + 0.3 * (1 - SSIM), as the reference training."""
    return 0.7 * F.l1_loss(output, target) + 0.3 * (1 - ssim(output, target))
