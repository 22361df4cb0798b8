"""Rate-distortion of pfnr against x264, x265 and SVT-AV1, each clip at the archive's working size.

    python -m benchmarks.rd --quick              # a few minutes on 2 cores
    python -m benchmarks.rd                      # full sweep, writes benchmarks/results/rd.*
    python -m benchmarks.rd clip.mp4 --frames 48 --no-pfnr

Every codec in a run codes the same frames at the same size; BD metrics compare pfnr's Pareto
front (over its whole settings sweep) with each anchor curve measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks import anchors
from benchmarks.bd import bd_psnr, bd_rate, overlap, pareto_front
from benchmarks.common import (
    RESULTS_DIR,
    Clip,
    Record,
    device_name,
    find_clips,
    load_clip,
    machine_info,
    markdown_table,
    read_records,
    versions_string,
    write_markdown,
    write_records,
)
from benchmarks.plot import plot_rd
from pfnr_codec.errors import PfnrError

BASELINE = "x264 medium"


def working_size(preset: str, path: Path) -> tuple[int, int]:
    """The size an archive made with ``preset`` from this clip decodes at."""
    from pfnr_codec.config import working_size as size_for
    from pfnr_codec.video import probe_video

    info = probe_video(path)
    return size_for(preset, info.height, info.width)


def measure_anchors(clip: Clip, mode: str, families: Sequence[str], device: str) -> list[Record]:
    versions = versions_string()
    records = []
    for family in families:
        for preset in anchors.PRESETS[family][mode]:
            anchor = anchors.make_anchor(family, preset)
            records += anchors.measure(
                clip, anchor, anchors.CRF_SWEEPS[family][mode], device, versions
            )
    return records


def bd_rows(records: Sequence[Record]) -> list[list]:
    """BD-rate / BD-PSNR of pfnr (its Pareto front) against every anchor curve, and of every
    anchor against x264 medium: a sanity check (x265 should need fewer bits than x264).
    """
    rows = []
    by_clip: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_clip[r.clip]["pfnr" if r.codec == "pfnr" else r.label].append(r)
    for clip, curves in by_clip.items():
        fronts = {label: _front(points) for label, points in curves.items()}
        references = [label for label in fronts if label != "pfnr"]
        for test_label, test in fronts.items():
            for ref_label in references:
                if ref_label == test_label or (test_label != "pfnr" and ref_label != BASELINE):
                    continue
                ref = fronts[ref_label]
                args = (
                    [p.bpp for p in ref],
                    [p.psnr for p in ref],
                    [p.bpp for p in test],
                    [p.psnr for p in test],
                )
                rate = _or_nan(bd_rate, args)  # NaN: the curves do not overlap on that axis
                gain = _or_nan(bd_psnr, args)
                psnr_span = overlap(args[1], args[3]) or float("nan")
                rate_span = 2 ** (overlap(np.log2(args[0]), np.log2(args[2])) or float("nan"))
                rows.append([clip, test_label, ref_label, rate, psnr_span, gain, rate_span])
    rows.sort(key=lambda row: (row[0], row[1] != "pfnr", row[1], row[2]))
    return rows


def _or_nan(metric, args) -> float:
    try:
        return metric(*args)
    except PfnrError:
        return float("nan")


def _front(points: Sequence[Record]) -> list[Record]:
    """The points of a curve that no other point of it beats, by rising rate."""
    return [points[i] for i in pareto_front([p.bpp for p in points], [p.psnr for p in points])]


def points_table(records: Sequence[Record]) -> str:
    rows = []
    for r in records:
        setting = ", ".join(f"{k} {v}" for k, v in r.settings.items() if k != "curve")
        if r.codec == "pfnr":
            setting += f" (ran {r.extra.get('epochs')} epochs)"
        rows.append(
            [r.clip, r.label, setting, r.bytes, r.bpp, r.psnr, r.ms_ssim, r.encode_s, r.decode_s]
        )
    header = ["clip", "curve", "settings", "bytes", "bpp", "PSNR", "MS-SSIM", "enc s", "dec s"]
    return markdown_table(rows, header)


def run_pfnr(
    clip: Clip,
    mode: str,
    args: argparse.Namespace,
    work: Path,
    on_point: Callable[[list[Record]], None] | None = None,
) -> list[Record]:
    """pfnr's points on this clip: one fresh archive per sweep point."""
    from benchmarks import pfnr_runs

    budget = dict(pfnr_runs.BUDGETS[mode])
    budget.update({k: v for k, v in (("epochs", args.epochs), ("minutes", args.minutes)) if v})
    points = [pfnr_runs.Point(q) for q in args.qualities] if args.qualities else None
    device = args.device
    return pfnr_runs.sweep(
        clip,
        mode,
        args.preset,
        device,
        device_name(device),
        versions_string(),
        work,
        points,
        budget,
        on_point,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, help="videos or folders (default: shared)")
    parser.add_argument("--quick", action="store_true", help="fewer points, smaller budgets")
    parser.add_argument("--frames", type=int, default=None, help="first N frames of each clip")
    parser.add_argument("--preset", default="cpu", help="pfnr preset (sets the working size)")
    parser.add_argument(
        "--anchors", nargs="*", default=None, help="subset of x264 x265 svtav1 (none: pfnr only)"
    )
    parser.add_argument("--no-pfnr", action="store_true", help="anchors only")
    parser.add_argument("--epochs", type=int, default=None, help="pfnr epochs per point")
    parser.add_argument("--minutes", type=float, default=None, help="pfnr time cap per point")
    parser.add_argument("--qualities", type=int, nargs="*", help="pfnr --quality levels to sweep")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default=None, help="result file stem (default rd / rd_quick)")
    parser.add_argument("--replot", type=Path, help="redraw report and plots from a records JSON")
    parser.add_argument(
        "--keep-archives", type=Path, help="keep pfnr's archives here (default: deleted)"
    )
    args = parser.parse_args(argv)

    mode = "quick" if args.quick else "full"
    frames = args.frames or (16 if args.quick else None)
    stem = args.name or ("rd_quick" if args.quick else "rd")
    if args.replot:
        machine, records = read_records(args.replot)
    else:
        machine, records = measure(args, mode, frames, stem)
    write_report(records, machine, args.out, stem, mode, args.preset)
    return 0


def measure(
    args: argparse.Namespace, mode: str, frames: int | None, stem: str
) -> tuple[dict, list[Record]]:
    """Anchors then pfnr on each clip; records are written after every pfnr point (a run cut
    short keeps what it measured)."""
    families = anchors.available_anchors() if args.anchors is None else args.anchors
    device = device_name(args.device)
    machine = machine_info(args.device)
    records: list[Record] = []
    for path in find_clips(args.clips):
        size = working_size(args.preset, path)
        clip = load_clip(path, (0, frames) if frames else None, size)
        records += measure_anchors(clip, mode, families, device)
        if not args.no_pfnr:
            work = args.out / "tmp" / stem
            done = list(records)
            records += run_pfnr(
                clip,
                mode,
                args,
                work,
                lambda points, done=done: write_records(done + points, args.out, stem, machine),
            )
            if args.keep_archives:
                args.keep_archives.mkdir(parents=True, exist_ok=True)
                for archive in work.glob(f"{clip.name}_*.pfnr"):
                    shutil.copy2(archive, args.keep_archives / archive.name)
        write_records(records, args.out, stem, machine)  # partial results survive a crash
    shutil.rmtree(args.out / "tmp" / stem, ignore_errors=True)
    return machine, records


def write_report(
    records: Sequence[Record],
    machine: dict,
    out: Path,
    stem: str,
    mode: str,
    preset: str,
) -> None:
    """Plots and the markdown report, from records only."""
    plot_rd(records, out / f"{stem}.png", title=f"RD, {mode} mode")
    plot_rd(records, out / f"{stem}_msssim.png", "ms_ssim", title=f"RD (MS-SSIM), {mode}")
    header = ["clip", "test", "anchor", "BD-rate %", "over PSNR span dB", "BD-PSNR dB"]
    bd = markdown_table(bd_rows(records), [*header, "over rate span x"])
    counts = ", ".join(f"{clip} {n}" for clip, n in {r.clip: r.frames for r in records}.items())
    write_markdown(
        out / f"{stem}.md",
        f"pfnr rate-distortion ({mode} mode)",
        machine,
        [
            f"Every codec codes the same frames of a clip, from its start ({counts}), at "
            f"the working size of pfnr preset `{preset}`. Anchors: yuv420p, CRF sweep, "
            "bpp from the stream's bytes. pfnr: one fresh archive per point, bpp from the whole "
            "file; its budget (epochs, minutes cap, epochs actually run) is in the points table.",
            "BD metrics (PCHIP over log-rate). Negative BD-rate = fewer bits than the anchor at "
            "equal PSNR, averaged over the PSNR span both curves cover; BD-PSNR likewise over "
            "the shared rate span, given as a max/min ratio; '-' = no overlap. pfnr's curve is "
            "the Pareto front of all its points; a BD value over a thin span is a weak claim.",
            bd,
            f"![RD]({stem}.png)",
            "All points (bpp from real bytes over the working size; RGB PSNR averaged per frame):",
            points_table(records),
        ],
    )


if __name__ == "__main__":
    raise SystemExit(main())
