"""A session's own input: integer latent grids, read by frame index.

A grid with a cell every `step` frames holds `latent_cells(frames, step, scenes)` maps of (C, h, w);
frame f reads the cells before and after it, mixed linearly in time (step 1: its own cell). Cells
are laid out scene by scene (`scenes`: the first frame of each): a cell never mixes two sides of a
scene cut, where frames have nothing in common. Values are integers (stored as floats): during
training they pass through rounding with a straight-through gradient, so the network always sees
what the archive will hold, and the session's chunk stores them entropy-coded per channel. A grid
may follow the camera (`follow`, format 1.5): each of the two cells a frame reads is first shifted
by how far the picture moved between the cell's frame and that frame (motion.py). Fine
content that weights alone cannot memorise in a CPU budget lives here, at the resolution where the
network needs it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import latent_cells, scene_spans

_MIN_COVER = 1e-3  # a position that shifted cells cover less than this reads 0


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
        self.register_buffer("_cell_frames", self.cell_frames(), persistent=False)
        # (frames, 2) positions in cells, set by `follow`: None, cells stay where they are
        self.register_buffer("_motion", None, persistent=False)

    def follow(self, positions: Tensor, cell_size: tuple[float, float]) -> None:
        """Shift each cell to the frame that reads it: `positions` (frames, 2) are each frame's
        (y, x) in pixels of a picture whose pixels map to cells of `cell_size` (height, width)."""
        motion = positions.to(torch.float64) / torch.tensor(cell_size, dtype=torch.float64)
        self._motion = motion.to(self.values.device)

    @property
    def cells(self) -> int:
        return self.values.shape[0]

    def rounded(self, cells: Tensor) -> Tensor:
        """The values of `cells` as stored: rounded, with a straight-through gradient while
        training. Only the cells a batch reads are rounded (a grid may hold millions of values)."""
        v = self.values[cells]
        if not torch.is_grad_enabled():  # the same values as below (r - v is exact), in one pass
            return torch.round(v)
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
        before, after = self.rounded(first + low), self.rounded(first + high)
        cell_before, cell_after = self._cell_frames[first + low], self._cell_frames[first + high]
        if self._motion is None or self._still_while_training(frame, cell_before, cell_after):
            return before * (1 - frac) + after * frac
        before, seen_before = self._moved(before, frame, cell_before)
        after, seen_after = self._moved(after, frame, cell_after)
        weight_before, weight_after = (1 - frac) * seen_before, frac * seen_after
        total = weight_before + weight_after
        mixed = (before * weight_before + after * weight_after) / total.clamp(min=_MIN_COVER)
        return torch.where(total > _MIN_COVER, mixed, torch.zeros_like(mixed))

    def _still_while_training(self, frame: Tensor, *cell_frames: Tensor) -> bool:
        """True when gradients are on and every frame of the batch sits where its cells do:
        unshifted cells cover everything, so the plain mix gives the same values up to rounding
        without the shifts' cost. Decoding runs without gradients and always shifts, so a stored
        session renders exactly as it always did."""
        if not torch.is_grad_enabled():
            return False
        assert self._motion is not None
        here = self._motion[frame]
        return all(bool((self._motion[cells] == here).all()) for cells in cell_frames)

    def _moved(self, maps: Tensor, frame: Tensor, cell_frame: Tensor) -> tuple[Tensor, Tensor]:
        """Cells `maps` (B, C, h, w) sitting on `cell_frame` (B,), shifted to where `frame` (B,)
        sees their content, and how much of each shifted position they cover (B, 1, h, w): a
        position whose content lay outside the cell is 0 there."""
        assert self._motion is not None
        batch, _, height, width = maps.shape
        shift = (self._motion[frame] - self._motion[cell_frame]).to(maps.dtype)  # (B, 2): y, x
        theta = torch.zeros(batch, 2, 3, dtype=maps.dtype, device=maps.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 0, 2] = -2 * shift[:, 1] / width  # output x reads input x - shift
        theta[:, 1, 2] = -2 * shift[:, 0] / height
        grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
        ones = torch.ones(batch, 1, height, width, dtype=maps.dtype, device=maps.device)
        both = F.grid_sample(
            torch.cat([maps, ones], dim=1), grid, padding_mode="zeros", align_corners=False
        )
        return both[:, :-1], both[:, -1:]

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
