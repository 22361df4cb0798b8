"""A session's own input: integer latent grids, read by frame index.

A grid with a cell every `step` frames holds `latent_cells(frames, step)` maps of (C, h, w); frame f
reads the cells before and after it, mixed linearly in time (step 1: its own cell). Values are
integers (stored as floats): during training they pass through rounding with a straight-through
gradient, so the network always sees what the archive will hold, and the session's chunk stores
them entropy-coded per channel. Fine content that weights alone cannot memorise in a CPU budget
lives here, at the resolution where the network needs it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import latent_cells


class LatentGrid(nn.Module):
    """Cells of (C, h, w) integer maps, one every `step` frames of a session of `frames` frames."""

    def __init__(self, frames: int, step: int, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.frames, self.step = frames, step
        self.values = nn.Parameter(torch.zeros(latent_cells(frames, step), channels, height, width))

    @property
    def cells(self) -> int:
        return self.values.shape[0]

    def rounded(self, cells: Tensor) -> Tensor:
        """The values of `cells` as stored: rounded, with a straight-through gradient while
        training. Only the cells a batch reads are rounded (a grid may hold millions of values)."""
        v = self.values[cells]
        return v + (torch.round(v) - v).detach()

    def forward(self, indices: Tensor) -> Tensor:
        """Maps for frame indices (B,) -> (B, C, h, w). Indices past the end read the last frame."""
        frame = indices.clamp(0, self.frames - 1)
        if self.step == 1 or self.cells == 1:
            return self.rounded(frame if self.step == 1 else torch.zeros_like(frame))
        low = torch.div(frame, self.step, rounding_mode="floor").clamp(max=self.cells - 2)
        frac = (frame - low * self.step).to(self.values.dtype) / self.step
        frac = frac[:, None, None, None]
        return self.rounded(low) * (1 - frac) + self.rounded(low + 1) * frac

    def cell_frames(self) -> Tensor:
        """The frame each cell sits on (the last cell may sit past the end: its nearest frame)."""
        return (torch.arange(self.cells) * self.step).clamp(max=self.frames - 1)
