"""Ablation of the rate levers at equal wall time: one fresh one-session archive per row.

    python -m benchmarks.ablation                          # bunny, whole clip, 3 minutes a row
    python -m benchmarks.ablation clip.mp4 --minutes 10

Each row encodes the whole clip through the public API under the same time budget, one after the
other on an otherwise idle machine, and measures the decoded session against the benchmark's own
frames (bpp from the whole file). Rows differ only in the setting they name.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

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
from benchmarks.pfnr_runs import encode_point
from benchmarks.rd import working_size
from pfnr_codec.api import EncodeOptions


@dataclass(frozen=True)
class Row:
    """One lever setting."""

    label: str
    bits: int
    quantize_aware: bool


ROWS = [
    Row("8-bit, rounded at the end (0.1 default)", 8, False),
    Row("8-bit, quantization-aware", 8, True),
    Row("6-bit, rounded at the end (default)", 6, False),
    Row("6-bit, quantization-aware", 6, True),
    Row("5-bit, quantization-aware", 5, True),
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, help="videos (default: bigbuckbunny)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per row")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="ablation")
    args = parser.parse_args(argv)

    paths = args.clips or [p for p in find_clips(None) if p.stem == "bigbuckbunny"]
    machine = machine_info(args.device)
    work = args.out / "tmp" / args.name
    device, versions = device_name(args.device), versions_string()
    records: list[Record] = []
    for path in paths:
        clip = load_clip(path, None, working_size(args.preset, path))
        base = EncodeOptions(
            preset=args.preset,
            epochs=10_000,  # the time budget decides
            minutes=args.minutes,
            frames=(0, clip.shape[0]),
            device=args.device,
        )
        for i, row in enumerate(ROWS):
            options = replace(base, bits=row.bits, quantize_aware=row.quantize_aware)
            settings = {
                "row": row.label,
                "bits": row.bits,
                "quantize_aware": row.quantize_aware,
                "minutes": args.minutes,
            }
            archive = work / f"{clip.name}_{i}.pfnr"
            records.append(encode_point(clip, archive, options, device, versions, settings))
            write_records(records, args.out, args.name, machine)
    shutil.rmtree(work, ignore_errors=True)
    rows = [
        [
            r.clip,
            r.settings["row"],
            r.extra["epochs"],
            r.bytes,
            r.bpp,
            r.psnr,
            r.ms_ssim,
            r.extra["breakdown"]["weights"],
        ]
        for r in records
    ]
    header = ["clip", "setting", "epochs", "bytes", "bpp", "PSNR", "MS-SSIM", "weight bytes"]
    write_markdown(
        args.out / f"{args.name}.md",
        "pfnr rate levers at equal wall time",
        machine,
        [
            f"Whole clips at the `{args.preset}` preset's working size, {args.minutes:g} minutes "
            "of training per row, one row at a time; bpp from the whole file, PSNR of the decoded "
            "session against the resized source.",
            markdown_table(rows, header),
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
