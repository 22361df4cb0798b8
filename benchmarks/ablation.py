"""Ablation of the rate-distortion levers at equal wall time: one fresh one-session archive per row.

    python -m benchmarks.ablation                          # bunny and bikes, whole clips, 3 min a row
    python -m benchmarks.ablation clip.mp4 --minutes 10 --rows 4 5   # two of the rows

Each row encodes the whole clip through the public API under the same time budget, one after the
other on an otherwise idle machine, and measures the decoded session against the benchmark's own
frames (bpp from the whole file). Rows differ only in the setting they name.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import anchors
from benchmarks.common import (
    RESULTS_DIR,
    Record,
    device_name,
    find_clips,
    load_clip,
    machine_info,
    markdown_table,
    versions_string,
    write_markdown,
    write_records,
)
from benchmarks.pfnr_runs import encode_point, whole_clip_options
from benchmarks.rd import working_size


@dataclass(frozen=True)
class Row:
    """One lever setting: a preset plus the options that differ from its defaults."""

    label: str
    preset: str
    options: dict[str, Any] = field(default_factory=dict)


ROWS = [
    Row("0.1 model: frame time, c 0.5, L1+SSIM, rounded at the end", "cpu-time"),
    Row("+ MSE loss", "cpu-time", {"loss": "mse"}),
    Row(
        "+ rate-aware weights (learned steps, lambda 0.003)",
        "cpu-time",
        {"loss": "mse", "quantize_aware": True, "rate_lambda": 0.003},
    ),
    Row(
        "latent grids at the stem (per 1/4/16 frames), no fine",
        "cpu",
        {"model": {"fine_block": None}},
    ),
    Row(
        "latent grids + fine latents at 1/4 size, per scene, following the camera (default)", "cpu"
    ),
    Row("fine latents every 4 frames", "cpu", {"model": {"fine_step": 4}}),
    Row("fine latents at 1/2 size", "cpu", {"model": {"fine_block": 2}}),
    Row("default without the f-NeRV (FSO) block", "cpu", {"model": {"fso_block": None}}),
    Row("default, weights rounded at the end", "cpu", {"quantize_aware": False}),
    Row("default, grids straddle scene cuts", "cpu", {"scene_cuts": False}),
    Row(
        "default, narrower network (channels 32/24/12, stem 16)",
        "cpu",
        {"model": {"channels": (32, 24, 12), "base_channels": 16}},
    ),
    Row("fine latents every 16 frames", "cpu", {"model": {"fine_step": 16}}),
    Row("stem latent grids per 2/8/32 frames", "cpu", {"model": {"latent_steps": (2, 8, 32)}}),
    Row("stem latent grids of 4 channels", "cpu", {"model": {"latent_channels": 4}}),
    Row("fine latents of 2 channels", "cpu", {"model": {"fine_channels": 2}}),
    Row("default, cells do not follow the camera", "cpu", {"model": {"follow_motion": False}}),
    Row(
        "blocks 2 and 3 narrower (channels 48, 24, 12)",
        "cpu",
        {"model": {"channels": (48, 24, 12)}},
    ),
    Row(
        "fine latents of 2 channels every 4 frames",
        "cpu",
        {"model": {"fine_channels": 2, "fine_step": 4}},
    ),
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, help="videos (default: bunny, bikes)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per row")
    parser.add_argument(
        "--epochs", type=int, help="train every row this many epochs instead (equal epochs)"
    )
    parser.add_argument("--preset", default="cpu", help="sets the working size")
    parser.add_argument("--quality", type=int, help="every row's --quality (default: the preset's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="ablation")
    parser.add_argument(
        "--rows", type=int, nargs="*", help=f"rows to run, 0-{len(ROWS) - 1} (default: all)"
    )
    args = parser.parse_args(argv)

    default = ("bigbuckbunny", "bikes")
    paths = args.clips or [p for p in find_clips(None) if p.stem in default]
    machine = machine_info(args.device)
    work = args.out / "tmp" / args.name
    device, versions = device_name(args.device), versions_string()
    records: list[Record] = []
    x264: dict[str, list[Record]] = {}
    for path in paths:
        clip = load_clip(path, None, working_size(args.preset, path))
        anchor = anchors.make_anchor("x264", "medium")
        crfs = anchors.CRF_SWEEPS["x264"]["full"]
        x264[clip.name] = anchors.measure(clip, anchor, crfs, device, versions)
        if args.epochs is None:
            base = whole_clip_options(clip, args.device, args.minutes, quality=args.quality)
        else:
            # A day: the preset's time cap (10 minutes for `cpu`) must not cut the epochs short.
            base = whole_clip_options(clip, args.device, 24 * 60, args.epochs, quality=args.quality)
        for i, row in enumerate(ROWS):
            if args.rows is not None and i not in args.rows:
                continue
            options = replace(base, preset=row.preset, **row.options)
            row_budget = (
                {"minutes": args.minutes} if args.epochs is None else {"epochs": args.epochs}
            )
            settings = {"row": row.label, "preset": row.preset, **row_budget}
            settings |= {"quality": args.quality} if args.quality is not None else {}
            settings |= {k: str(v) for k, v in row.options.items()}
            archive = work / f"{clip.name}_{i}.pfnr"
            records.append(encode_point(clip, archive, options, device, versions, settings))
            write_records(records, args.out, args.name, machine)
    shutil.rmtree(work, ignore_errors=True)
    rows = [
        [
            r.clip,
            r.settings["row"],
            r.extra["epochs"],
            round(r.encode_s),
            r.bytes,
            r.bpp,
            r.psnr,
            r.ms_ssim,
            r.extra["breakdown"]["weights"],
            r.extra["breakdown"].get("latents", 0),
            r.bpp / x264_rate_at(x264[r.clip], r.psnr),
        ]
        for r in records
    ]
    header = ["clip", "setting", "epochs", "enc s", "bytes", "bpp", "PSNR", "MS-SSIM", "weights B"]
    header += ["latents B", "x x264"]
    quality = "the default quality" if args.quality is None else f"quality {args.quality}"
    budget = f"{args.minutes:g} minutes" if args.epochs is None else f"{args.epochs} epochs"
    write_markdown(
        args.out / f"{args.name}.md",
        "pfnr rate-distortion levers at equal wall time",
        machine,
        [
            f"Whole clips at the `{args.preset}` preset's working size, {budget} of training "
            f"per row at {quality}, one row at a time; bpp from the whole file, PSNR of the decoded "
            "session against the resized source. 'x x264': the row's bpp over the bpp x264 "
            "medium needs for the same PSNR on the same frames, measured in this run (CRF sweep, "
            "log-rate interpolated): a one-point stand-in for BD-rate, lower is better.",
            markdown_table(rows, header),
        ],
    )
    return 0


def x264_rate_at(points: Sequence[Record], psnr: float) -> float:
    """bpp the anchor needs for `psnr`, interpolated in log-rate (clamped to its sweep)."""
    ordered = sorted(points, key=lambda r: r.psnr)
    quality = [r.psnr for r in ordered]
    log_rate = [math.log(r.bpp) for r in ordered]
    return math.exp(float(np.interp(psnr, quality, log_rate)))


if __name__ == "__main__":
    raise SystemExit(main())
