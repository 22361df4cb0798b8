"""Tiny seeded synthetic clips for tests: smooth moving patterns, different per seed."""

from __future__ import annotations

import numpy as np
import torch


def synthetic_frames(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (T, H, W, 3): a few coloured blobs and waves drifting over a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    base = rng.uniform(0.2, 0.8, size=3)
    tilt = rng.uniform(-0.3, 0.3, size=(3, 2))
    centres = rng.uniform(0.2, 0.8, size=(3, 2))
    velocity = rng.uniform(-0.02, 0.02, size=(3, 2))
    colours = rng.uniform(-0.4, 0.4, size=(3, 3))
    wave = rng.uniform(2, 6, size=2)
    out = np.empty((frames, height, width, 3), dtype=np.float64)
    for k in range(frames):
        img = base + tilt[:, 0] * yy[..., None] + tilt[:, 1] * xx[..., None]
        for (cy, cx), (vy, vx), colour in zip(centres, velocity, colours, strict=True):
            d2 = (yy - cy - vy * k) ** 2 + (xx - cx - vx * k) ** 2
            img = img + np.exp(-d2 / 0.02)[..., None] * colour
        img = img + 0.1 * np.sin(wave[0] * 6 * xx + wave[1] * 4 * yy + 0.3 * k)[..., None]
        out[k] = img
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def synthetic_tensor(frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """float32 (T, 3, H, W) in [0, 1]."""
    x = synthetic_frames(frames, height, width, seed)
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


def textured_frames(frames: int, height: int, width: int, seed: int, cell: int = 2) -> np.ndarray:
    """uint8 (T, H, W, 3): a fixed random texture of `cell` x `cell`-pixel squares panning one
    pixel per frame, under a slowly moving blob: detail that must be held, not smoothed."""
    rng = np.random.default_rng(seed)
    shape = (height // cell + 2, (width + frames) // cell + 2, 3)
    coarse = rng.uniform(0.1, 0.9, size=shape)
    texture = coarse.repeat(cell, axis=0).repeat(cell, axis=1)[:height, : width + frames]
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    out = np.empty((frames, height, width, 3), dtype=np.float64)
    for k in range(frames):
        blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.3 - 0.03 * k) ** 2) / 0.03)[..., None]
        out[k] = texture[:, k : k + width] * (1 - blob) + 0.9 * blob
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def grid_with_context(rng: np.random.Generator, shape=(6, 3, 32, 40)) -> np.ndarray:
    """Integer latents (cells, C, h, w) a context model predicts: smooth maps, each channel after
    the first close to the one before it."""
    cells, channels, height, width = shape
    steps = rng.integers(-1, 2, (cells, 1, height, width)) * (rng.random((cells, 1, 1, 1)) < 0.2)
    walk = np.cumsum(np.cumsum(np.cumsum(steps, 0), 2), 3) // 6
    noise = rng.integers(-1, 2, (cells, channels, height, width)) * (rng.random(shape) < 0.3)
    return (np.clip(walk, -6, 6) + np.cumsum(noise, axis=1)).astype(np.int64)
