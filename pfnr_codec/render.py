"""Turning a finished session into frames, deterministically.

Floating-point results depend on batch composition (batch 1 and batch 8 differ by an ulp, which moves
a few uint8 pixels). So frames are always computed in canonical batches: batch b holds frames
8b .. 8b+7 of the session, padded past the end with the following frame times, whatever range the caller
asks for. `exact=True` renders in float64, which gives the same uint8 frames across batch sizes, thread
counts and instruction sets.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError
from .model import PFNR, Head

CANONICAL_BATCH = 8


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU; 'cuda:N' names one GPU.

    On CUDA, cuDNN is held to deterministic convolution algorithms: its default heuristics may pick
    backward kernels that sum with atomics, and a seeded training must give the same archive twice.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise ConfigError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} was asked for but torch sees no CUDA device")
        if index and int(index) >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ConfigError(f"device {name} does not exist: torch sees {count} CUDA devices")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.device(name)


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def session_weights(model: PFNR, masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Effective weights of a finished session: frozen values under its masks, zeros elsewhere."""
    return {name: mw.decode_weight(masks[name]) for name, mw in model.masked_weights().items()}


@torch.no_grad()
def render_frames(
    model: PFNR,
    weights: dict[str, Tensor],
    head: Head,
    start: int = 0,
    end: int | None = None,
    exact: bool = False,
) -> np.ndarray:
    """uint8 frames [start, end) of the session `head` belongs to: (T, H, W, 3).

    `weights` are the session's effective weights (`session_weights`), or any full set of weights
    for a network trained without masks.
    """
    end = head.frames if end is None else end
    if exact:
        model, head = copy.deepcopy(model).double(), copy.deepcopy(head).double()
        weights = {name: w.double() for name, w in weights.items()}
    device = next(head.parameters()).device
    first = start - start % CANONICAL_BATCH
    out = []
    for batch_start in range(first, end, CANONICAL_BATCH):
        indices = torch.arange(batch_start, batch_start + CANONICAL_BATCH, device=device)
        frames = to_uint8(model(indices, head, weights))
        lo, hi = max(start - batch_start, 0), min(end - batch_start, CANONICAL_BATCH)
        out.append(frames[lo:hi])
    height, width = model.config.height, model.config.width
    if not out:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.concatenate(out)
