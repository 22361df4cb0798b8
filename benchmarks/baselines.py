"""Continual-coding baselines for ``continual.py``, and the PSNR matrix every method fills.

- Fine-tuning: one dense network (the pfnr body without masks) trained clip after clip, with one
  head per clip; the shared body drifts, so earlier clips degrade. Its width is chosen so that its
  weights at the pfnr archive's bits per weight would take the archive's total bytes, but it
  stores 8-bit per-channel codes and latents trained without a rate term (entropy coded with the
  archive's coder, float32 scales and heads): in a family trained against rate it takes several
  times the archive's bytes (`continual_4clips.md`: 4.9x). Its row measures forgetting, and its
  bytes are reported as they are.
- STL: one independent single-session archive per clip at capacity 1 (a plain dense network:
  an all-ones mask costs almost nothing). In a family trained against its coded size, each clip's
  archive aims at the bytes its pfnr session took (`--target-size`), so every session meets its
  own network at its own bytes and the totals match; otherwise its width is chosen so the STL
  archives' total bytes match the pfnr archive's, from a bits-per-weight estimate taken from the
  pfnr archive. The bytes reported are the real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Clip, markdown_table, quality
from pfnr_codec.api import (
    EncodeOptions,
    decode_session,
    encode_video,
    inspect_archive,
    train_settings,
)
from pfnr_codec.config import get_preset, scaled_preset, trains_against_rate
from pfnr_codec.entropy import DEFAULT_CODER, encode_ints, get_coder
from pfnr_codec.model import PFNR
from pfnr_codec.quant import dequantize, quantize
from pfnr_codec.render import render_frames, resolve_device
from pfnr_codec.train import begin_session, fit_dense, start_head
from pfnr_codec.video import frames_to_tensor, write_video

WIDTH_GRID = np.round(np.arange(0.2, 4.01, 0.05), 2)


@dataclass
class Matrix:
    """PSNR of session i (row) evaluated after session j (column) was learned; NaN above j < i."""

    method: str
    names: list[str]
    psnr: np.ndarray
    bytes: list[int]  # total bytes stored after each session
    exact: list[bool] = field(default_factory=list)  # per column: old sessions bit-identical

    @property
    def final(self) -> np.ndarray:
        return self.psnr[:, -1]

    def forgetting(self) -> np.ndarray:
        """Per session: PSNR right after learning it minus PSNR at the end (0 = no forgetting)."""
        return np.diag(self.psnr) - self.final

    def table(self) -> str:
        n = len(self.names)
        header = ["session \\ after", *[f"{j + 1}: {self.names[j]}" for j in range(n)]]
        rows = [[f"{i + 1}: {self.names[i]}", *self.psnr[i]] for i in range(n)]
        rows.append(["total bytes", *self.bytes])
        return markdown_table(rows, header)


def weight_bits(archive: Path) -> float:
    """Bits per stored weight in a pfnr archive (weights + scales streams / new weights)."""
    info = inspect_archive(archive)
    new = sum(s.new_weights for s in info.sessions)
    return 8.0 * (info.breakdown.get("weights", 0) + info.breakdown.get("scales", 0)) / max(new, 1)


def _config(preset: str, scale: float, shape: tuple[int, int]):
    return scaled_preset(get_preset(preset), scale).model_config(*shape)


def _weights(preset: str, scale: float, shape: tuple[int, int]) -> int:
    model = PFNR(_config(preset, scale, shape))
    return sum(mw.weight.numel() for mw in model.masked_weights().values())


def width_for_bytes(preset: str, shape: tuple[int, int], target: float, bits: float) -> float:
    """The width scale whose dense weight count times ``bits`` comes closest to ``target`` bytes."""
    sizes = [_weights(preset, float(s), shape) * bits / 8 for s in WIDTH_GRID]
    return float(WIDTH_GRID[int(np.argmin([abs(b - target) for b in sizes]))])


def _head_bytes(head) -> int:  # noqa: ANN001
    """Bytes a head costs as an archive stores it: float32 output layer, coded latents."""
    coder = get_coder(DEFAULT_CODER)
    size = 4 * (head.conv.weight.numel() + head.conv.bias.numel())
    for grid in head.grids().values():
        values = torch.round(grid.values.detach()).cpu().numpy().astype(np.int64)
        size += sum(len(encode_ints(values[:, c].ravel(), coder)) for c in range(values.shape[1]))
    return size


def _quantized(model: PFNR, bits: int = 8) -> tuple[dict[str, torch.Tensor], int]:
    """Dense weights rounded as an archive would store them, and their coded size in bytes."""
    coder = get_coder(DEFAULT_CODER)
    out, size = {}, 0
    for name, mw in model.masked_weights().items():
        values = mw.weight.detach().cpu().numpy().astype(np.float32).ravel()
        groups = mw.groups().numpy().ravel()
        codes, scales = quantize(values, groups, mw.n_groups, bits)
        size += len(encode_ints(codes, coder)) + scales.nbytes
        restored = dequantize(codes, groups, scales).reshape(mw.shape)
        out[name] = torch.from_numpy(restored).to(mw.weight.device)
    return out, size


def run_finetune(
    clips: Sequence[Clip],
    preset: str,
    shape: tuple[int, int],
    target_bytes: int,
    bits_per_weight: float,
    options: EncodeOptions,
) -> Matrix:
    """One dense network fine-tuned through the clips, evaluated (8-bit weights) after each."""
    heads_bytes = 0
    scale = width_for_bytes(preset, shape, target_bytes, bits_per_weight)
    config = _config(preset, scale, shape)
    device = resolve_device(options.device)
    model = PFNR(config).to(device)
    settings = replace(train_settings(options, preset), capacity=1.0, bits=8)
    targets = [frames_to_tensor(clip.frames).to(device) for clip in clips]
    generator = torch.Generator().manual_seed(options.seed)
    begin_session(model, settings, options.seed, targets[0])
    n = len(clips)
    psnr = np.full((n, n), np.nan)
    heads, sizes = [], []
    for j, target in enumerate(targets):
        head = start_head(model, target, generator)
        fit_dense(model, head, target, settings)
        heads.append(head)
        heads_bytes += _head_bytes(head)
        weights, body_bytes = _quantized(model)
        sizes.append(body_bytes + heads_bytes)
        for i in range(j + 1):
            frames = render_frames(model, weights, heads[i])
            psnr[i, j] = quality(clips[i].frames, frames)[0]
    return Matrix(f"fine-tuning (dense, width x{scale:g})", [c.name for c in clips], psnr, sizes)


def run_stl(
    clips: Sequence[Clip],
    preset: str,
    shape: tuple[int, int],
    target_bytes: int,
    bits_per_weight: float,
    options: EncodeOptions,
    work: Path,
    session_bytes: Sequence[int],
) -> Matrix:
    """One independent dense archive per clip; independent models never forget."""
    per_clip = target_bytes / len(clips)
    size = clips[0].shape[1:]
    own = _config(preset, 1.0, size)
    if any(c.shape[1:] != size for c in clips) or (own.height, own.width) != size:
        raise ValueError(f"STL expects every clip at one working size that is its own, got {size}")
    by_rate = trains_against_rate(get_preset(preset))
    scale = 1.0 if by_rate else width_for_bytes(preset, shape, per_clip, bits_per_weight)
    n = len(clips)
    psnr = np.full((n, n), np.nan)
    sizes, total = [], 0

    for j, clip in enumerate(clips):
        archive = work / f"stl_{j + 1}.pfnr"
        archive.unlink(missing_ok=True)
        # The benchmark's frames, losslessly: every clip is coded at the pfnr archive's size.
        source = write_video(clip.frames, work / f"stl_{j + 1}.mkv", clip.fps)
        stl_options = replace(options, capacity=1.0, width_scale=scale, frames=None, preset=preset)
        if by_rate:
            stl_options = replace(stl_options, target_bytes=int(session_bytes[j]))
        encode_video(archive, source, stl_options)
        total += inspect_archive(archive).file_bytes
        sizes.append(total)
        frames = decode_session(archive, 1, size="working", device=options.device).frames
        psnr[j, j:] = quality(clip.frames, frames)[0]
    label = "each at its pfnr session's bytes" if by_rate else f"width x{scale:g} each"
    return Matrix(f"STL (dense, {label})", [c.name for c in clips], psnr, sizes)
