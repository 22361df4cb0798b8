"""A session's own input: integer latent grids, read by frame index.

A grid with a cell every `step` frames holds `latent_cells(frames, step, scenes)` maps of (C, h, w);
frame f reads the cells before and after it, mixed linearly in time (step 1: its own cell). Cells
are laid out scene by scene (`scenes`: the first frame of each): a cell never mixes two sides of a
scene cut, where frames have nothing in common. Values are integers (stored as floats): during
training they pass through rounding with a straight-through gradient, so the network always sees
what the archive will hold, and the session's chunk stores them entropy-coded per channel. Fine
content that weights alone cannot memorise in a CPU budget lives here, at the resolution where the
network needs it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import latent_cells, scene_spans


class LatentGrid(nn.Module):
    """Cells of (C, h, w) integer maps, one every `step` frames of each scene of a session of
    `frames` frames."""

    def __init__(
        self,
        frames: int,
        step: int,
        channels: int,
        height: int,
        width: int,
        scenes: tuple[int, ...] = (0,),
    ) -> None:
        super().__init__()
        self.frames, self.step, self.scenes = frames, step, scenes
        counts = [latent_cells(end - start, step) for start, end in scene_spans(frames, scenes)]
        offsets = [sum(counts[:k]) for k in range(len(counts))]
        self.register_buffer("_starts", torch.tensor(scenes), persistent=False)
        self.register_buffer("_counts", torch.tensor(counts), persistent=False)
        self.register_buffer("_offsets", torch.tensor(offsets), persistent=False)
        self.values = nn.Parameter(torch.zeros(sum(counts), channels, height, width))

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
        if self.step == 1:  # a cell per frame, whatever the scenes
            return self.rounded(frame)
        scene = torch.searchsorted(self._starts, frame, right=True) - 1
        local, counts = frame - self._starts[scene], self._counts[scene]
        low = torch.div(local, self.step, rounding_mode="floor")
        low = torch.minimum(low, (counts - 2).clamp(min=0))
        high = low + (counts > 1).to(low.dtype)  # a one-cell scene reads its cell alone
        frac = (local - low * self.step).to(self.values.dtype) / self.step
        frac = torch.where(counts > 1, frac, torch.zeros_like(frac))[:, None, None, None]
        first = self._offsets[scene]
        return self.rounded(first + low) * (1 - frac) + self.rounded(first + high) * frac

    def cell_frames(self) -> Tensor:
        """The frame each cell sits on (a scene's last cell may sit past its end: its nearest
        frame)."""
        spans = scene_spans(self.frames, self.scenes)
        return torch.cat(
            [
                start + (torch.arange(count) * self.step).clamp(max=end - start - 1)
                for (start, end), count in zip(spans, self._counts.tolist(), strict=True)
            ]
        )
