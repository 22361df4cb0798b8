"""Continual coding: clips appended as sessions 1..N of one archive, against two baselines.

    python -m benchmarks.continual --quick
    python -m benchmarks.continual a.mp4 b.mp4 c.mp4
    python -m benchmarks.continual c.mp4 b.mp4 a.mp4 --name continual_reversed

The PSNR matrix has a row per session i and a column per archive state j (after session j was
appended, i <= j). pfnr's rows are constant, and the script checks that the decoded frames are
bit-for-bit identical in every column, not merely equal in PSNR. Baselines, run in the same script
on the same frames: plain fine-tuning of one dense network through the clips in order (its old
rows fall: forgetting), and one independent network per clip (STL) sized so that the STL models'
total bytes match the pfnr archive's. The summary gives each method's mean PSNR beside its real
bytes.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import baselines
from benchmarks.baselines import Matrix
from benchmarks.common import (
    DEFAULT_CLIPS_DIR,
    RESULTS_DIR,
    Clip,
    Record,
    Timer,
    bits_per_pixel,
    device_name,
    load_clip,
    machine_info,
    markdown_table,
    quality,
    versions_string,
    write_markdown,
    write_records,
)
from pfnr_codec.api import (
    EncodeOptions,
    decode_session,
    encode_video,
    inspect_archive,
    shown_parts,
)

DEFAULT_ORDER = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def run_pfnr(clips: Sequence[Clip], archive: Path, options: EncodeOptions) -> tuple[Matrix, list]:
    """Append every clip to one archive; decode every earlier session after each append."""
    n = len(clips)
    psnr = np.full((n, n), np.nan)
    first: list[np.ndarray] = []
    exact: list[bool] = []
    sizes: list[int] = []
    records: list[Record] = []
    device, versions = device_name(options.device), versions_string()
    for j, clip in enumerate(clips):
        with Timer() as enc:
            report = encode_video(
                archive, clip.path, _with(options, frames=(0, clip.shape[0]), name=clip.name)
            )
        sizes.append(inspect_archive(archive).file_bytes)
        same = True
        for i in range(j + 1):
            with Timer() as dec:
                frames = decode_session(archive, i + 1, size="working", device=options.device)
            frames = frames.frames
            if i == j:
                first.append(frames)
                psnr[i, j], msssim = quality(clips[i].frames, frames)
                t, h, w = clips[i].shape
                records.append(
                    Record(
                        clip=clip.name,
                        codec="pfnr",
                        settings={"curve": "continual", "session": j + 1},
                        frames=t,
                        height=h,
                        width=w,
                        bytes=report.bytes,
                        bpp=bits_per_pixel(report.bytes, t, h, w),
                        psnr=psnr[i, j],
                        ms_ssim=msssim,
                        encode_s=enc.seconds,
                        decode_s=dec.seconds,
                        device=device,
                        versions=versions,
                        extra={
                            "reused_share": report.reused_share,
                            "epochs": report.epochs,
                            "parts": report.parts,
                            "added_channels": report.added_channels,
                        },
                    )
                )
            else:
                same &= bool(np.array_equal(frames, first[i]))
                psnr[i, j] = quality(clips[i].frames, frames)[0]
        exact.append(same)
    return Matrix("pfnr", [c.name for c in clips], psnr, sizes, exact), records


def _with(options: EncodeOptions, **changes: object) -> EncodeOptions:
    from dataclasses import replace

    return replace(options, **changes)


def session_rows(records: Sequence[Record]) -> list[list[object]]:
    """Per pfnr session: what it paid for by part, how much of its network it reused, its time."""
    rows = []
    for r in records:
        parts = shown_parts(r.extra["parts"])
        rows.append(
            [
                f"{r.settings['session']}: {r.clip}",
                parts["weights"],
                parts["latents"],
                parts["masks"],
                parts["heads"],
                r.bytes,
                r.extra["reused_share"],
                r.extra["added_channels"],
                r.encode_s,
            ]
        )
    return rows


def versus_own_rows(pfnr: Matrix, stl: Matrix, session_bytes: Sequence[int]) -> list[list[object]]:
    """Each session against its own independent network (STL), bytes and final PSNR side by side."""
    stl_bytes = np.diff([0, *stl.bytes])
    rows = []
    for i, name in enumerate(pfnr.names):
        gap = pfnr.final[i] - stl.final[i]
        rows.append(
            [f"{i + 1}: {name}", session_bytes[i], pfnr.final[i], stl_bytes[i], stl.final[i], gap]
        )
    return rows


SESSION_COLUMNS = [
    "session",
    "weights B",
    "latents B",
    "masks B",
    "heads B",
    "total B",
    "mask reusing frozen",
    "channels added",
    "enc s",
]


def summary_rows(matrices: Sequence[Matrix], pixels: int) -> list[list[object]]:
    rows = []
    for m in matrices:
        total = m.bytes[-1]
        rows.append(
            [
                m.method,
                total,
                total * 8 / pixels,
                float(np.mean(m.final)),
                float(np.max(m.forgetting())),
                ("yes" if all(m.exact) else "no") if m.exact else "-",
            ]
        )
    return rows


def _frame_counts(clips: Sequence[Clip], first: int | None) -> str:
    """'bikes 250, cup 217 frames', or 'the first N frames of each' when `first` cut them."""
    if first:
        return f"the first {first} frames of each"
    return ", ".join(f"{c.name} {c.shape[0]}" for c in clips) + " frames: whole clips"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, help=">= 3 videos, in session order")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=None, help="per session")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", help="results file stem (e.g. one per clip order)")
    args = parser.parse_args(argv)

    quick = args.quick
    stem = args.name or ("continual_quick" if quick else "continual")
    paths = args.clips or [DEFAULT_CLIPS_DIR / name for name in DEFAULT_ORDER]
    frames = args.frames or (16 if quick else None)
    epochs = args.epochs or (40 if quick else 150)
    minutes = args.minutes or (0.2 if quick else 3.0)
    if args.epochs and not args.minutes:
        minutes = None  # a fixed number of epochs: every method gets the same steps
    from pfnr_codec.config import working_size
    from pfnr_codec.video import probe_video

    info = probe_video(paths[0])
    size = working_size(args.preset, info.height, info.width)  # the archive's, set by clip 1
    clips = [load_clip(p, (0, frames) if frames else None, size) for p in paths]
    machine = machine_info(args.device)
    work = args.out / "tmp" / stem
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    options = EncodeOptions(preset=args.preset, epochs=epochs, minutes=minutes, device=args.device)

    archive = work / "continual.pfnr"
    pfnr, records = run_pfnr(clips, archive, options)
    session_bytes = [r.bytes for r in records]
    shape = (info.height, info.width)
    rate = baselines.weight_bits(archive)
    matrices = [
        pfnr,
        baselines.run_finetune(clips, args.preset, shape, pfnr.bytes[-1], rate, options),
        baselines.run_stl(
            clips, args.preset, shape, pfnr.bytes[-1], rate, options, work, session_bytes
        ),
    ]

    pixels = sum(int(np.prod(c.shape)) for c in clips)
    write_records(records, args.out, stem, machine)
    sections = [
        f"{len(clips)} clips at the archive's working size {size[1]}x{size[0]} "
        f"({_frame_counts(clips, frames)}), preset {args.preset}, {epochs} epochs per "
        f"session" + (f" or {minutes} min, whichever ends first" if minutes else "") + ", the "
        "same for every method. Rates from real bytes: total bytes after the last "
        "session over all sessions' pixels.",
        "## Summary",
        markdown_table(
            summary_rows(matrices, pixels),
            ["method", "total bytes", "bpp", "mean final PSNR", "max forgetting dB", "bit-exact"],
        ),
    ]
    sections += [
        "## pfnr sessions: bytes by part (weights with their scales), the share of each "
        "session's mask that reuses frozen weights, channels it added (growth), encode time",
        markdown_table(session_rows(records), SESSION_COLUMNS),
    ]
    sections += [
        "## Each session against its own network (STL)",
        markdown_table(
            versus_own_rows(pfnr, matrices[2], session_bytes),
            ["session", "pfnr B", "pfnr PSNR", "STL B", "STL PSNR", "pfnr - STL dB"],
        ),
    ]
    for m in matrices:
        sections += [f"## {m.method}: PSNR of session i after session j", m.table()]
    from benchmarks.plot import plot_matrices

    heat_map = plot_matrices(matrices, args.out / f"{stem}.png")
    sections.append(f"![PSNR matrices]({heat_map.name})")
    write_markdown(args.out / f"{stem}.md", f"pfnr continual coding ({stem})", machine, sections)
    shutil.rmtree(work, ignore_errors=True)
    print((args.out / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
