"""RD plots drawn from records only, so any result file can be redrawn without rerunning."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import Record  # noqa: E402

METRICS = {"psnr": "RGB PSNR (dB)", "ms_ssim": "MS-SSIM (dB): -10 log10(1 - MS-SSIM)"}


def _value(record: Record, metric: str) -> float:
    """The plotted value: MS-SSIM in dB, where differences near 1 stay visible."""
    value = getattr(record, metric)
    if metric == "ms_ssim":
        return -10 * math.log10(max(1e-10, 1 - value))
    return value


def _legend(label: str, points: Sequence[Record]) -> str:
    """pfnr's curve names its training budget: the figure means nothing without it."""
    minutes = {p.settings.get("minutes") for p in points} - {None}
    if label.startswith("pfnr") and len(minutes) == 1:
        return f"{label} ({minutes.pop():g} min training per point)"
    return label


def _style(label: str) -> dict:
    """pfnr in solid thick lines; anchors dashed, slower presets dotted, so the eye finds pfnr."""
    if label.startswith("pfnr"):
        return {"linestyle": "-", "linewidth": 2.2, "marker": "o"}
    slow = any(s in label for s in ("veryslow", "svtav1 preset 4"))
    return {"linestyle": ":" if slow else "--", "linewidth": 1.3, "marker": "s", "markersize": 4}


def plot_rd(
    records: Sequence[Record], path: Path, metric: str = "psnr", title: str = "Rate-distortion"
) -> Path:
    """One panel per clip, quality against bpp (log axis), one line per curve label."""
    clips = list(dict.fromkeys(r.clip for r in records))
    cols = min(3, len(clips)) or 1
    rows = (len(clips) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    for ax, clip in zip(axes.flat, clips, strict=False):
        curves: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            if r.clip == clip:
                curves[r.label].append(r)
        for label, points in sorted(curves.items()):
            points.sort(key=lambda r: r.bpp)
            ax.plot(
                [p.bpp for p in points],
                [_value(p, metric) for p in points],
                label=_legend(label, points),
                **_style(label),
            )
        first = next(r for r in records if r.clip == clip)
        ax.set_title(f"{clip} ({first.width}x{first.height}, {first.frames} frames)")
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (real bytes)")
        ax.set_ylabel(METRICS.get(metric, metric))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(clips) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_matrices(matrices: Sequence, path: Path) -> Path:
    """The continual PSNR matrices as heat maps, one panel per method on one colour scale:
    forgetting shows as a row that fades to the right."""
    values = [m.psnr for m in matrices]
    finite = [v[np.isfinite(v)] for v in values]
    lo = min(float(f.min()) for f in finite if f.size)
    hi = max(float(f.max()) for f in finite if f.size)
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.8), squeeze=False)
    for ax, matrix in zip(axes.flat, matrices, strict=True):
        n = len(matrix.names)
        image = ax.imshow(matrix.psnr, vmin=lo, vmax=hi, cmap="viridis")
        for i in range(n):
            for j in range(n):
                if np.isfinite(matrix.psnr[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{matrix.psnr[i, j]:.1f}",
                        ha="center",
                        va="center",
                        color="white" if matrix.psnr[i, j] < (lo + hi) / 2 else "black",
                    )
        ax.set_xticks(range(n), [f"after {j + 1}" for j in range(n)], fontsize=7)
        first = ax is axes.flat[0]  # session names once, at the left
        rows = [f"{i + 1}: {name}" if first else str(i + 1) for i, name in enumerate(matrix.names)]
        ax.set_yticks(range(n), rows, fontsize=7)
        ax.set_title(f"{matrix.method}\n{matrix.bytes[-1]:,} bytes", fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="PSNR (dB)", shrink=0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_side_by_side(
    source: np.ndarray, decoded: np.ndarray, path: Path, title: str, crop: int = 96
) -> Path:
    """A source frame beside its decode, whole and as a `crop`-pixel detail at the centre
    (where blur or ringing shows), uint8 (H, W, 3) each."""
    h, w = source.shape[:2]
    y, x = max(0, h // 2 - crop // 2), max(0, w // 2 - crop // 2)
    panels = [
        ("source", source),
        ("pfnr", decoded),
        ("source, detail", source[y : y + crop, x : x + crop]),
        ("pfnr, detail", decoded[y : y + crop, x : x + crop]),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(9, 9 * h / w / 2 + 2.2))
    for ax, (label, image) in zip(axes.flat, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
