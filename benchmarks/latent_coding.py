"""What a format's latent coding saves on real sessions, and what that does to BD-rate (written for
1.2's latents streams and packed stream tables, over archives of 1.1; run again for 1.4's spatial
context, over archives of 1.3, and for 1.6's context models, over archives of 1.6 coded again as
1.5 codes them: `--format 1.5`).

The frames a session decodes to do not depend on how its latent integers are entropy-coded or how
its stream table is laid out, so the saving can be measured exactly on archives an RD run wrote:
every latent grid of every session is coded again as the writer of the chosen format codes it
(`bitstream.pack_grid`, checked to decode back to the same integers), the session chunk is
rebuilt around the new streams as that format lays it out, and the file size follows.
The RD records of those archives (same clips, same frames, same PSNR) then get the new sizes, and
BD-rate against the anchors of the same run is computed both ways.

    python -m benchmarks.latent_coding ARCHIVE_DIR --rd benchmarks/results/rd.json [--name N]
        [--format MAJOR.MINOR]

ARCHIVE_DIR holds the run's archives as `<clip>_q<quality>.pfnr` (`benchmarks.rd --keep-archives`).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    RESULTS_DIR,
    bits_per_pixel,
    markdown_table,
    read_records,
    write_markdown,
)
from benchmarks.rd import bd_rows
from pfnr_codec.archive import load_archive
from pfnr_codec.bitstream import pack_grid, unpack_grid
from pfnr_codec.container import FORMAT_VERSION, FRAMING_BYTES, SessionChunk, session_to_bytes

NAME = re.compile(r"(?P<clip>.+)_q(?P<quality>\d+)\.pfnr$")


def recode(path: Path, version: tuple[int, int] = FORMAT_VERSION) -> dict[str, float]:
    """Bytes of the archive at `path` as stored, and with its latents coded as format `version`
    codes them (file and latent streams; per grid too)."""
    loaded = load_archive(path, torch.device("cpu"))
    contents = loaded.contents
    file_bytes = table_only = contents.header_bytes
    latents_before = latents_after = 0
    grids: dict[str, list[int]] = {}
    for chunk, head in zip(contents.sessions, loaded.heads, strict=True):
        streams = dict(chunk.streams)
        for name, grid in head.grids().items():
            values = grid.values.detach().numpy().astype(np.int64)
            old = {k: v for k, v in streams.items() if k.startswith(f"{name}/")}
            new = pack_grid(name, values, loaded.coder, version)
            decoded = unpack_grid(new, name, values.shape, loaded.coder, version)
            if not np.array_equal(decoded, values):
                raise AssertionError(f"{path}: {name} does not decode to its values")
            for key in old:
                del streams[key]
            streams.update(new)
            before, after = sum(map(len, old.values())), sum(map(len, new.values()))
            latents_before += before
            latents_after += after
            sizes = grids.setdefault(name, [0, 0])
            sizes[0] += before
            sizes[1] += after
        file_bytes += len(session_to_bytes(SessionChunk(chunk.meta, streams), version))
        file_bytes += FRAMING_BYTES
        table_only += len(session_to_bytes(chunk, version)) + FRAMING_BYTES  # old streams
    return {
        "file_before": contents.file_bytes,
        "file_after": file_bytes,
        "table_saved": contents.file_bytes - table_only,
        "latents_before": latents_before,
        "latents_after": latents_after,
        "grids": grids,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archives", type=Path, help="folder of an RD run's archives")
    parser.add_argument("--rd", type=Path, default=RESULTS_DIR / "rd.json", help="its records")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="latent_coding")
    parser.add_argument(
        "--format",
        default=".".join(map(str, FORMAT_VERSION)),
        help="code the latents as this format version's writer does (default: the current one)",
    )
    args = parser.parse_args(argv)
    version = tuple(int(part) for part in args.format.split("."))
    if len(version) != 2 or version > FORMAT_VERSION:
        raise SystemExit(f"--format: expected a version up to {FORMAT_VERSION}, got {args.format}")
    target = args.format

    machine, records = read_records(args.rd)
    points = {(r.clip, r.settings.get("quality")): r for r in records if r.codec == "pfnr"}
    rows, stored, recoded, measured = [], [], [], {}
    for path in sorted(args.archives.glob("*.pfnr")):
        match = NAME.match(path.name)
        key = match and (match["clip"], int(match["quality"]))
        if key not in points:
            continue
        record = points[key]
        sizes = recode(path, version)
        if sizes["file_before"] != record.bytes:
            raise SystemExit(f"{path} has {sizes['file_before']} bytes, its record {record.bytes}")
        bpp = bits_per_pixel(int(sizes["file_after"]), record.frames, record.height, record.width)
        stored.append(record)
        recoded.append(replace(record, bytes=int(sizes["file_after"]), bpp=bpp))
        measured[f"{key[0]} q{key[1]}"] = sizes
        fine = sizes["grids"].get("latent/fine", [0, 0])
        rows.append(
            [
                key[0],
                key[1],
                record.psnr,
                record.bpp,
                bpp,
                100 * (1 - sizes["latents_after"] / sizes["latents_before"]),
                100 * (1 - fine[1] / fine[0]) if fine[0] else float("nan"),
                sizes["table_saved"],
                100 * (1 - sizes["file_after"] / sizes["file_before"]),
            ]
        )
    if not rows:
        raise SystemExit(f"no archive in {args.archives} matches a pfnr point of {args.rd}")
    anchors = [r for r in records if r.codec != "pfnr"]
    before = {(row[0], row[2]): row[3] for row in bd_rows(anchors + stored) if row[1] == "pfnr"}
    after = bd_rows(anchors + recoded)
    bd = [
        [row[0], row[2], before.get((row[0], row[2]), float("nan")), row[3]]
        for row in after
        if row[1] == "pfnr"
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"rd": str(args.rd), "archives": measured}, indent=1) + "\n"
    )
    header = [
        "clip",
        "q",
        "PSNR",
        "bpp stored",
        f"bpp {target}",
        "latents -%",
        "fine -%",
        "table -B",
        "file -%",
    ]
    write_markdown(
        args.out / f"{args.name}.md",
        f"Latents streams (format {target}) on the sessions of an RD run",
        machine,
        [
            f"The archives of the RD run in `{args.rd.name}` (same frames, same PSNR), their "
            f"latent channels coded again as format {target} codes them (each decodes back to "
            f"the same integers) and the session chunk laid out as {target} lays it out; `-%` is "
            f"the share of the stored bytes that {target}'s coding saves (negative: it costs "
            "more; latents: all grids; fine: the quarter-size grid), `table -B` the bytes its "
            "stream table saves.",
            markdown_table(rows, header),
            "BD-rate of pfnr against each anchor of that run, with the sizes as stored and as "
            f"{target} codes them (negative = fewer bits than the anchor at equal PSNR):",
            markdown_table(bd, ["clip", "anchor", "BD-rate % stored", f"BD-rate % {target}"]),
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
