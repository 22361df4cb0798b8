"""Weights shared by all sessions, each session choosing a sparse subset of them.

A `MaskedWeight` holds three things:
- `frozen`: values fixed by earlier sessions (zero where no session has claimed the position yet);
- `used`: the union U of earlier sessions' masks;
- `weight` and `score`: what the current session trains. The effective value at a used position always
  comes from `frozen` (through `torch.where`), so training cannot move a frozen weight, not even by one
  ulp, whatever the optimizer does.

The session mask is the top-`capacity` fraction of |score|, computed per tensor, with a straight-through
gradient to the scores (WSN). A mask may cover one weight or a group of weights: 3x3 convolutions use
one mask bit per kernel, which cuts mask bits ninefold and keeps kernels whole.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ..quant import dequantize


class _TopFraction(torch.autograd.Function):
    """Binary mask of the `k` largest |scores|; the gradient passes straight through to the scores."""

    @staticmethod
    def forward(ctx, scores: Tensor, k: int) -> Tensor:  # noqa: ANN001
        return top_k_mask(scores, k).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        return grad, None


def mask_size(numel: int, capacity: float) -> int:
    """How many positions a mask of `capacity` keeps in a tensor of `numel` positions."""
    return min(numel, max(1, round(capacity * numel)))


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the `k` largest |scores| (ties broken by position, deterministically)."""
    flat = scores.detach().abs().flatten()
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.view(scores.shape)


class MaskedWeight(nn.Module):
    """One shared weight tensor with per-session masks over groups of `mask_shape`."""

    def __init__(
        self,
        shape: tuple[int, ...],
        mask_shape: tuple[int, ...],
        fan_in: int,
        channel_axis: int,
        channel_block: int = 1,
    ) -> None:
        super().__init__()
        if len(shape) != len(mask_shape) or any(
            m not in (1, s) for m, s in zip(mask_shape, shape, strict=True)
        ):
            raise ValueError(f"mask shape {mask_shape} does not broadcast to {shape}")
        self.shape = tuple(shape)
        self.mask_shape = tuple(mask_shape)
        self.fan_in = fan_in
        # Quantization groups: index along `channel_axis`, divided by `channel_block`.
        self.channel_axis = channel_axis
        self.channel_block = channel_block
        self.weight = nn.Parameter(torch.zeros(shape))
        self.score = nn.Parameter(torch.zeros(mask_shape))
        self.register_buffer("frozen", torch.zeros(shape))
        self.register_buffer("used", torch.zeros(mask_shape, dtype=torch.bool))
        self.capacity = 1.0
        self.fixed_mask: Tensor | None = None  # set for decoding and fine-tuning

    @property
    def n_groups(self) -> int:
        return math.ceil(self.shape[self.channel_axis] / self.channel_block)

    @property
    def expand(self) -> int:
        """Weights per mask position."""
        return math.prod(self.shape) // math.prod(self.mask_shape)

    def reset_session(self, generator: torch.Generator, capacity: float = 1.0) -> None:
        """Fresh values for every free position and fresh scores: a new session starts clean.

        Values are scaled by 1/sqrt(capacity): a mask keeping a fraction c of the inputs would
        otherwise shrink every layer's output variance by c, and deep masked stacks fade out.
        """
        self.capacity = capacity
        bound = 1.0 / math.sqrt(self.fan_in * capacity)
        with torch.no_grad():
            fresh = torch.rand(self.shape, generator=generator) * 2 - 1
            self.weight.copy_(fresh * bound)
            self.score.copy_(torch.rand(self.mask_shape, generator=generator) * 2 - 1)
        self.fixed_mask = None

    def session_mask(self) -> Tensor:
        """Bool mask (mask_shape) the current scores select."""
        if self.fixed_mask is not None:
            return self.fixed_mask
        return top_k_mask(self.score, mask_size(self.score.numel(), self.capacity))

    def forward(self) -> Tensor:
        """The effective weight tensor for this session's forward pass."""
        if self.fixed_mask is not None:
            mask = self.fixed_mask.to(self.frozen.dtype)
        else:
            mask = _TopFraction.apply(self.score, mask_size(self.score.numel(), self.capacity))
        values = torch.where(self.used, self.frozen, self.weight)
        return values * mask

    def decode_weight(self, mask: Tensor) -> Tensor:
        """Weight of a finished session: only frozen values, exact zeros elsewhere."""
        return torch.where(mask & self.used, self.frozen, torch.zeros((), dtype=self.frozen.dtype))

    def groups(self) -> Tensor:
        """Quantization group of every weight position (long, `shape`)."""
        index = torch.arange(self.shape[self.channel_axis]) // self.channel_block
        view = [1] * len(self.shape)
        view[self.channel_axis] = -1
        return index.view(view).expand(self.shape)

    def claim(self, mask: Tensor, codes: np.ndarray, scales: np.ndarray) -> None:
        """Freeze code x scale at the positions `mask` newly claims (row-major order), grow the
        union: the one place where encoding and replaying a session make weights permanent."""
        new = (mask & ~self.used).expand(self.shape).cpu()
        groups = self.groups()[new].numpy()
        full = torch.zeros(self.shape, dtype=self.frozen.dtype)
        full[new] = torch.from_numpy(dequantize(codes, groups, scales)).to(self.frozen.dtype)
        self.freeze(mask, full.to(self.frozen.device))

    def freeze(self, mask: Tensor, values: Tensor) -> None:
        """Make `values` permanent at the positions `mask` newly claims; grow the union."""
        new = (mask & ~self.used).expand(self.shape)
        with torch.no_grad():
            self.frozen[new] = values[new].to(self.frozen.dtype)
        self.used |= mask
