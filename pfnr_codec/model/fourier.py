"""The Fourier Subneural Operator (FSO) of an f-NeRV block.

rFFT2 of the input, a learned complex channel-mixing matrix per kept frequency (real and imaginary
parts are two masked weights), the output spectrum laid out at the *upsampled* size, irFFT2. With
`norm="forward"` a coefficient means the same amplitude at both sizes, so identity weights upsample a
band-limited signal ideally. Negative vertical frequencies go to the *end* of the larger grid (the
reference code pads after them, which misplaces them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .masked import MaskedWeight


class FourierSubneuralOperator(nn.Module):
    """Maps (B, C_in, h, w) to (B, C_out, h*scale, w*scale) through kept Fourier modes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: tuple[int, int],
        scale: int,
        modes: tuple[int, int],
    ) -> None:
        super().__init__()
        h, w = in_size
        self.in_size = in_size
        self.scale = scale
        # Kept: rows 0..pos-1 and -neg..-1, columns 0..cols-1; never a Nyquist row or column,
        # whose coefficient would need splitting between two positions of the larger grid.
        self.pos_rows = min(modes[0], (h + 1) // 2)
        self.neg_rows = min(modes[0], (h - 1) // 2)
        self.cols = min(modes[1], (w + 1) // 2)
        shape = (in_channels, out_channels, self.pos_rows + self.neg_rows, self.cols)
        fan_in = in_channels * 4
        self.real = MaskedWeight(shape, shape, fan_in, channel_axis=1)
        self.imag = MaskedWeight(shape, shape, fan_in, channel_axis=1)

    def forward(self, x: Tensor, weights: tuple[Tensor, Tensor] | None = None) -> Tensor:
        # At least float32 when training autocasts to bfloat16 (the FFTs have no bfloat16
        # kernels); float64 renders stay float64.
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x.to(torch.promote_types(x.dtype, torch.float32)), weights)

    def _forward(self, x: Tensor, weights: tuple[Tensor, Tensor] | None) -> Tensor:
        h, w = x.shape[-2:]
        pos, neg, m2 = self.pos_rows, self.neg_rows, self.cols
        real, imag = weights if weights is not None else (self.real(), self.imag())
        spectrum = torch.fft.rfft2(x, norm="forward")  # (B, C_in, h, w//2+1)
        kept = torch.cat([spectrum[:, :, :pos, :m2], spectrum[:, :, h - neg :, :m2]], dim=2)
        mixed = torch.einsum("bixy,ioxy->boxy", kept, torch.complex(real, imag))
        out_h, out_w = h * self.scale, w * self.scale
        out = torch.zeros(
            x.shape[0], mixed.shape[1], out_h, out_w // 2 + 1, dtype=mixed.dtype, device=x.device
        )
        out[:, :, :pos, :m2] = mixed[:, :, :pos]
        out[:, :, out_h - neg :, :m2] = mixed[:, :, pos:]
        return torch.fft.irfft2(out, s=(out_h, out_w), norm="forward")  # (B, C_out, H, W)
