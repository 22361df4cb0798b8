"""The PFNR network: frame index -> frame, with per-session masks and heads.

    time input:   k (B,) -> t = k / N_s -> positional encoding (B, 2L) -> masked MLP stem
    latent input: k (B,) -> the session's latent grids at the stem grid -> masked 3x3 conv stem
      -> (B, C0, h0, w0)
      -> blocks: masked 3x3 conv -> PixelShuffle(r) [+ FSO in the f-NeRV block] -> GELU
         (the fine latents of the session join the input of block `fine_block`)
      -> session head: 1x1 conv (C -> 3) -> (tanh + 1) / 2 -> (B, 3, H, W)

A session feeds the network only its own input (its frame times, or its own latents), so appending
sessions never changes what an earlier session sees.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import ModelConfig
from ..motion import MOTION_UNIT
from .fourier import FourierSubneuralOperator
from .latents import LatentGrid
from .masked import MaskedWeight


def positional_encoding(t: Tensor, levels: int, base: float) -> Tensor:
    """NeRV's encoding: sin and cos of pi * base**i * t for i < levels; (B,) -> (B, 2*levels)."""
    freqs = math.pi * base ** torch.arange(levels, dtype=t.dtype, device=t.device)
    angles = t[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def mask_block_size(in_features: int, block: int) -> int:
    """Largest divisor of `in_features` not above `block`: inputs sharing one mask bit."""
    return next(k for k in range(max(1, block), 0, -1) if in_features % k == 0)


class MaskedLinear(nn.Module):
    """Linear layer without bias; one mask bit per run of `block` consecutive inputs of a row.

    The weight is kept as (out, in / block, block) so the mask broadcasts over the last axis.
    """

    def __init__(
        self, in_features: int, out_features: int, block: int = 1, channel_block: int = 1
    ) -> None:
        super().__init__()
        k = mask_block_size(in_features, block)
        shape = (out_features, in_features // k, k)
        self.weight = MaskedWeight(
            shape, shape[:2] + (1,), in_features, channel_axis=0, channel_block=channel_block
        )

    def forward(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        w = self.weight() if weight is None else weight
        return F.linear(x, w.reshape(w.shape[0], -1))


class MaskedConv3x3(nn.Module):
    """3x3 convolution without bias; one mask bit per (out, in) kernel."""

    def __init__(self, in_channels: int, out_channels: int, channel_block: int = 1) -> None:
        super().__init__()
        shape = (out_channels, in_channels, 3, 3)
        self.weight = MaskedWeight(
            shape, (out_channels, in_channels, 1, 1), in_channels * 9, 0, channel_block
        )

    def forward(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        return F.conv2d(x, self.weight() if weight is None else weight, padding=1)


class Block(nn.Module):
    """NeRV block, optionally with the Fourier Subneural Operator (f-NeRV block)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        in_size: tuple[int, int],
        fso_modes: tuple[int, int] | None,
        fso_only: bool,
    ) -> None:
        super().__init__()
        self.stride = stride
        # Quantization groups follow the output feature map: r*r conv rows feed one channel.
        self.conv = None
        if not (fso_only and fso_modes is not None):
            self.conv = MaskedConv3x3(in_channels, out_channels * stride**2, stride**2)
        self.fso = None
        if fso_modes is not None:
            self.fso = FourierSubneuralOperator(
                in_channels, out_channels, in_size, stride, fso_modes
            )

    def forward(self, x: Tensor, weights: dict[str, Tensor] | None = None) -> Tensor:
        out = 0
        if self.conv is not None:
            w = None if weights is None else weights["conv.weight"]
            out = F.pixel_shuffle(self.conv(x, w), self.stride)
        if self.fso is not None:
            fw = None if weights is None else (weights["fso.real"], weights["fso.imag"])
            out = out + self.fso(x, fw)
        return F.gelu(out)


class Head(nn.Module):
    """A session's own parts: its output layer (1x1 conv to RGB, then (tanh + 1) / 2) and, in the
    latent family, its latent grids. `frames` is the session's length N_s, `scenes` the first
    frame of each of its scenes (grids lay their cells out scene by scene)."""

    def __init__(self, config: ModelConfig, frames: int, scenes: tuple[int, ...] = (0,)) -> None:
        super().__init__()
        self.frames, self.scenes = frames, scenes
        self.working_size = (config.height, config.width)
        self.positions: Tensor | None = None  # (frames, 2) set by `follow`
        self.conv = nn.Conv2d(config.channels[-1], 3, kernel_size=1)
        self.latents = nn.ModuleList()
        self.fine = None
        if config.latent:
            h, w = config.base_height, config.base_width
            for step in config.latent_steps:
                grid = LatentGrid(frames, step, config.latent_channels, h, w, scenes)
                self.latents.append(grid)
            if config.fine_block is not None:
                fh, fw = config.block_input_size(config.fine_block)
                self.fine = LatentGrid(
                    frames, config.fine_step, config.fine_channels, fh, fw, scenes
                )

    def grids(self) -> dict[str, LatentGrid]:
        """Every latent grid by its stream name."""
        out = {f"latent/{i}": grid for i, grid in enumerate(self.latents)}
        if self.fine is not None:
            out["latent/fine"] = self.fine
        return out

    def follow(self, positions: Tensor) -> None:
        """Make every grid with cells between frames follow the camera: `positions` (frames, 2)
        are each frame's (y, x) integers in 1/MOTION_UNIT pixels of the working size."""
        self.positions = positions.to(torch.int64).cpu()
        pixels = self.positions.to(torch.float64) / MOTION_UNIT
        height, width = self.working_size
        for grid in self.grids().values():
            if grid.step > 1:
                cells_h, cells_w = grid.values.shape[2:]
                grid.follow(pixels, (height / cells_h, width / cells_w))

    def forward(self, x: Tensor) -> Tensor:
        # The 1x1 convolution as a channel contraction: on a CPU, 3x faster than conv2d's kernels.
        weight, bias = self.conv.weight[:, :, 0, 0], self.conv.bias
        out = torch.einsum("bchw,oc->bohw", x, weight) + bias[:, None, None]
        return (torch.tanh(out) + 1) / 2


class PFNR(nn.Module):
    """The shared body. Heads are kept apart: each session owns one."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        cells = config.base_height * config.base_width
        block = config.linear_mask_block
        if config.latent:
            latent_in = len(config.latent_steps) * config.latent_channels
            self.stem = MaskedConv3x3(latent_in, config.base_channels)
        else:
            self.stem_in = MaskedLinear(2 * config.pe_levels, config.stem_hidden, block)
            # The stem's large output layer is quantized per feature-map channel, not per row.
            self.stem_out = MaskedLinear(
                config.stem_hidden, config.base_channels * cells, block, cells
            )
        blocks = []
        for i, (stride, out_channels) in enumerate(
            zip(config.strides, config.channels, strict=True)
        ):
            modes = config.fso_modes if i == config.fso_block else None
            in_channels, size = config.block_input_channels(i), config.block_input_size(i)
            blocks.append(Block(in_channels, out_channels, stride, size, modes, config.fso_only))
        self.blocks = nn.ModuleList(blocks)

    def masked_weights(self) -> dict[str, MaskedWeight]:
        """Every shared tensor by a stable name (the archive's stream names derive from it)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, MaskedWeight)}

    def new_head(self, frames: int, scenes: tuple[int, ...] = (0,)) -> Head:
        """The own parts of a new session of `frames` frames in `scenes`."""
        return Head(self.config, frames, scenes)

    def features(
        self, indices: Tensor, head: Head, weights: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Body output for frame indices (B,) of `head`'s session -> (B, C_last, H, W)."""
        c = self.config

        def w(name: str) -> Tensor | None:
            return None if weights is None else weights[name]

        if c.latent:
            x = torch.cat([grid(indices) for grid in head.latents], dim=1)  # (B, C_lat, h0, w0)
            x = F.gelu(self.stem(x.contiguous(memory_format=torch.channels_last), w("stem.weight")))
        else:
            t = frame_times(indices, head.frames).to(head.conv.weight.dtype)
            x = positional_encoding(t, c.pe_levels, c.pe_base)
            x = F.gelu(self.stem_in(x, w("stem_in.weight")))
            x = F.gelu(self.stem_out(x, w("stem_out.weight")))
            x = x.view(-1, c.base_channels, c.base_height, c.base_width)  # (B, C0, h0, w0)
        x = x.contiguous(memory_format=torch.channels_last)
        for i, block in enumerate(self.blocks):
            if i == c.fine_block and head.fine is not None:
                x = torch.cat([head.fine(indices), x], dim=1)  # (B, C_fine + C_in, h_i, w_i)
                x = x.contiguous(memory_format=torch.channels_last)
            prefix = f"blocks.{i}."
            sub = None
            if weights is not None:
                sub = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            x = block(x, sub)
        return x

    def forward(
        self, indices: Tensor, head: Head, weights: dict[str, Tensor] | None = None
    ) -> Tensor:
        return head(self.features(indices, head, weights))


def frame_times(indices: Tensor, total_frames: int) -> Tensor:
    """t = k / N_s in float64: depends on the session's own length only."""
    return indices.to(torch.float64) / total_frames
