"""How close `pfnr encode --target-bpp` lands: whole clips, one fresh archive per target.

    python -m benchmarks.target_size                       # bunny and bikes, 0.05 and 0.15 bpp
    python -m benchmarks.target_size clip.mp4 --targets 0.1 --minutes 10

Each row encodes the whole clip at the `cpu` preset's working size with lambda steered towards
the target (bits per pixel of the session, as `pfnr encode` reports it), one row at a time on an
otherwise idle machine, then decodes it and measures PSNR against the benchmark's own frames.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
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
from benchmarks.pfnr_runs import encode_point, whole_clip_options
from benchmarks.rd import working_size
from pfnr_codec.container import read_archive
from pfnr_codec.metrics import bpp


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, help="videos (default: bunny, bikes)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.05, 0.15], help="bpp")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per row")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="target_size")
    args = parser.parse_args(argv)

    default = ("bigbuckbunny", "bikes")
    paths = args.clips or [p for p in find_clips(None) if p.stem in default]
    machine = machine_info(args.device)
    work = args.out / "tmp" / args.name
    device, versions = device_name(args.device), versions_string()
    records: list[Record] = []
    for path in paths:
        clip = load_clip(path, None, working_size(args.preset, path))
        for target in args.targets:
            options = whole_clip_options(
                clip, args.device, args.minutes, preset=args.preset, target_bpp=target
            )
            settings = {"target_bpp": target, "minutes": args.minutes}
            archive = work / f"{clip.name}_{target:g}.pfnr"
            record = encode_point(clip, archive, options, device, versions, settings)
            meta = read_archive(archive).sessions[0].meta
            record.extra |= {"rate_lambda": meta["rate_lambda"], "rollbacks": meta["recoveries"]}
            records.append(record)
            write_records(records, args.out, args.name, machine)
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    for r in records:
        landed = bpp(r.extra["session_bytes"], r.frames, r.height, r.width)
        target = r.settings["target_bpp"]
        rows.append([r.clip, target, landed, f"{landed / target - 1:+.1%}", r.psnr])
        rows[-1] += [r.extra["epochs"], r.extra["rollbacks"], r.extra["rate_lambda"]]
    header = ["clip", "target", "session bpp", "miss", "PSNR", "epochs", "rollbacks", "lambda"]
    write_markdown(
        args.out / f"{args.name}.md",
        "pfnr encode --target-bpp: where sessions land",
        machine,
        [
            f"Whole clips at the `{args.preset}` preset's working size, {args.minutes:g} minutes "
            "of training per row, one row at a time. The session's bpp counts its own bytes in "
            "the file (as `pfnr encode` reports it; the file adds a header of a few hundred "
            "bytes); lambda starts at quality 4's and is steered after every epoch once the "
            "weights train quantized (lambda: where it ended; rollbacks: collapses undone).",
            markdown_table(rows, header),
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
