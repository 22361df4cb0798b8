"""Global motion: how far the picture has panned at each frame, for latent cells that follow it.

A latent grid with a cell every few frames mixes the cells on either side of a frame. Under a
camera pan those cells hold the scene at different places (bikes pans up to 12-17 pixels a frame
at the working size: cells 8 frames apart lie up to a hundred pixels apart), and the mix is a
double exposure the network has to undo. With each frame's position known, a cell is shifted to
the frame that reads it, so one cell serves its frames wherever the camera went.

The position is a global translation found by phase correlation between consecutive frames at the
working size, summed over the frames (across a scene cut nothing is measured: cells never mix two
scenes, so only positions within a scene are ever compared). The file stores each frame's step from
the frame before (the first frame's from 0) in 1/`MOTION_UNIT` pixels of the working size, as
integers, so it defines the positions exactly.
"""

from __future__ import annotations

import numpy as np

from .config import scene_spans
from .errors import ArchiveError

MOTION_UNIT = 8  # positions are integers in 1/8 pixel of the working size
MAX_STEP = 1 << 16  # |position change| between two frames, in units: larger is refused
MIN_PEAK = 0.03  # a phase-correlation peak below this is noise: no motion measured
# A scene whose every step is slower than this (pixels a frame, larger component) holds still:
# a still camera's sub-pixel noise (bunny: steps of at most 1/8 pixel) would otherwise add up to
# pixels of drift (bunny: 5) and make every batch pay the shifts. A scene that moves faster at
# least once is followed in full, its small steps included (a hand-held camera's shake).
STILL_STEP = 0.25


def _window(height: int, width: int) -> np.ndarray:
    return np.outer(np.hanning(height), np.hanning(width))


def _spectrum(frame: np.ndarray, window: np.ndarray) -> np.ndarray:
    gray = frame.astype(np.float64).mean(axis=0)  # (3, H, W) uint8 -> (H, W)
    return np.fft.rfft2((gray - gray.mean()) * window)


def _subpixel(left: float, centre: float, right: float) -> float:
    """Offset of a parabola's vertex through three samples around a peak, within half a sample."""
    curvature = left - 2 * centre + right
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def frame_shift(before: np.ndarray, after: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(dy, dx) in pixels with after(x) ~ before(x - d), for frames (3, H, W) uint8; (0, 0) when
    the correlation shows no clear peak (a cut, noise, a flat picture)."""
    cross = _spectrum(after, window) * np.conj(_spectrum(before, window))
    cross /= np.abs(cross) + 1e-12
    height, width = before.shape[1:]
    surface = np.fft.irfft2(cross, s=(height, width))
    py, px = np.unravel_index(int(np.argmax(surface)), surface.shape)
    if surface[py, px] < MIN_PEAK:
        return 0.0, 0.0
    dy = py + _subpixel(surface[py - 1, px], surface[py, px], surface[(py + 1) % height, px])
    dx = px + _subpixel(surface[py, px - 1], surface[py, px], surface[py, (px + 1) % width])
    dy = dy - height if dy > height / 2 else dy
    dx = dx - width if dx > width / 2 else dx
    return float(dy), float(dx)


def global_positions(frames: np.ndarray, scenes: tuple[int, ...] = (0,)) -> np.ndarray:
    """Each frame's position (T, 2) as (y, x) integers in 1/MOTION_UNIT pixels: the sum of the
    shifts since the first frame, which sits at (0, 0); a scene's first frame keeps the position of
    the frame before, and so does every frame of a scene whose camera never moves STILL_STEP in a
    frame. `frames` is (T, 3, H, W) uint8."""
    count, _, height, width = frames.shape
    window = _window(height, width)
    shifts = np.zeros((count, 2))  # pixels each frame moved from the frame before
    starts = sorted(set(scenes) | {0})
    for k in range(1, count):
        if k not in starts:
            shifts[k] = frame_shift(frames[k - 1], frames[k], window)
    for start, end in scene_spans(count, tuple(starts)):
        if np.abs(shifts[start:end]).max(initial=0.0) < STILL_STEP:
            shifts[start:end] = 0.0
    steps = np.clip(np.round(shifts * MOTION_UNIT).astype(np.int64), -MAX_STEP, MAX_STEP)
    return np.cumsum(steps, axis=0)


def position_steps(positions: np.ndarray) -> np.ndarray:
    """What the file stores: each frame's step (T, 2) from the frame before (the first's from 0)."""
    return np.diff(positions, axis=0, prepend=np.zeros((1, 2), dtype=positions.dtype))


def positions_from_steps(steps: np.ndarray) -> np.ndarray:
    """The positions (T, 2) that stored `steps` (T, 2) define, after checking their bound."""
    if steps.size and int(np.abs(steps).max()) > MAX_STEP:
        raise ArchiveError(f"a motion step exceeds {MAX_STEP} (1/{MOTION_UNIT} pixels)")
    return np.cumsum(steps.astype(np.int64), axis=0)
