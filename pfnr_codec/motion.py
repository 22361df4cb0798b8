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

from .errors import ArchiveError

MOTION_UNIT = 8  # positions are integers in 1/8 pixel of the working size
MAX_STEP = 1 << 16  # |position change| between two frames, in units: larger is refused
MIN_PEAK = 0.03  # a phase-correlation peak below this is noise: no motion measured
# A step slower than this (pixels a frame, larger component) counts as none: a still camera's
# sub-pixel jitter (carphone: a median step of 1/8 pixel) and a crawl would otherwise add up to
# pixels of drift (bunny: 5), and every shift costs training time and blurs the cells a little.
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
    shifts since the first frame, which sits at (0, 0); a scene's first frame, and a frame that
    moved less than STILL_STEP, keeps the position of the frame before. `frames` is (T, 3, H, W)
    uint8."""
    count, _, height, width = frames.shape
    window = _window(height, width)
    positions = np.zeros((count, 2), dtype=np.int64)
    starts = set(scenes)
    for k in range(1, count):
        positions[k] = positions[k - 1]
        if k in starts:
            continue
        dy, dx = frame_shift(frames[k - 1], frames[k], window)
        if max(abs(dy), abs(dx)) >= STILL_STEP:
            step = np.round(np.array([dy, dx]) * MOTION_UNIT).astype(np.int64)
            positions[k] += np.clip(step, -MAX_STEP, MAX_STEP)
    return positions


def position_steps(positions: np.ndarray) -> np.ndarray:
    """What the file stores: each frame's step (T, 2) from the frame before (the first's from 0)."""
    return np.diff(positions, axis=0, prepend=np.zeros((1, 2), dtype=positions.dtype))


def positions_from_steps(steps: np.ndarray) -> np.ndarray:
    """The positions (T, 2) that stored `steps` (T, 2) define, after checking their bound."""
    if steps.size and int(np.abs(steps).max()) > MAX_STEP:
        raise ArchiveError(f"a motion step exceeds {MAX_STEP} (1/{MOTION_UNIT} pixels)")
    return np.cumsum(steps.astype(np.int64), axis=0)
