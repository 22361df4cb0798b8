"""Scene cuts: where a session's latent grids start a new run of cells.

A latent grid with a cell every few frames mixes the cells on either side of each frame; across a
cut the two cells hold unrelated pictures, and the frames around it are blends the network has to
undo (bikes, quality 3: the frames within 8 of a cut lose 1.4 dB, the cut frame itself about 3).
So cells are laid out scene by scene, and the encoder finds the scenes here.

A cut is a jump in the colour histogram from one frame to the next that stands far above its
neighbours' jumps: a camera move or fast motion changes many pixels (a large pixel difference) but
little of the histogram, and does so over several frames in a row, while a cut changes it once.
The frames are reduced to 16-bin histograms per colour channel, so this costs next to nothing.
"""

from __future__ import annotations

import numpy as np

from .session_meta import MAX_SCENES

BINS = 16
CUT_DISTANCE = 0.3  # histogram distance (0..2, averaged over the channels) a cut must reach
CUT_PROMINENCE = 3.0  # ... and how many times its neighbours' distances it must be
MIN_SCENE_FRAMES = 4  # a cut closer than this to the previous one is ignored (flashes, fades)


def histogram_distances(frames: np.ndarray) -> np.ndarray:
    """Distance between the colour histograms of each frame and the one before (0 for the first):
    the L1 distance of the normalised 16-bin histograms, averaged over the channels (0..2).
    `frames` is (T, 3, H, W) uint8."""
    offsets = (np.arange(3) * BINS)[:, None]
    hist = np.stack(
        [
            np.bincount(((frame.reshape(3, -1) >> 4) + offsets).ravel(), minlength=3 * BINS)
            for frame in frames  # one frame at a time: long sessions stay small in memory
        ]
    ).astype(np.float64)
    hist /= frames[0, 0].size
    distance = np.abs(np.diff(hist, axis=0)).sum(1) / 3
    return np.concatenate([[0.0], distance])


def scene_starts(frames: np.ndarray) -> tuple[int, ...]:
    """The first frame of each scene of `frames` (T, 3, H, W) uint8: (0,) and every cut after it."""
    distance = histogram_distances(frames)
    starts = [0]
    for k in range(1, len(distance)):
        neighbours = max(distance[k - 1], distance[k + 1] if k + 1 < len(distance) else 0.0)
        is_cut = distance[k] >= CUT_DISTANCE and distance[k] >= CUT_PROMINENCE * neighbours
        if is_cut and k - starts[-1] >= MIN_SCENE_FRAMES and len(starts) < MAX_SCENES:
            starts.append(k)
    return tuple(starts)
