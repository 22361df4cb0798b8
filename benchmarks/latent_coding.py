"""What the current format's latent coding saves on real sessions, and what that does to BD-rate
(written for 1.2's latents streams and packed stream tables, over archives of 1.1; run again for
1.4's spatial context, over archives of 1.3).

The frames a session decodes to do not depend on how its latent integers are entropy-coded or how
its stream table is laid out, so the saving can be measured exactly on archives an RD run wrote in
an earlier format: every latent channel of every session is coded again as the current writer
codes it (`entropy.encode_latents`, checked to decode back to the same integers), the session
chunk is rebuilt around the new streams as the current format lays it out, and the file size
follows.
The RD records of those archives (same clips, same frames, same PSNR) then get the new sizes, and
BD-rate against the anchors of the same run is computed both ways.

    python -m benchmarks.latent_coding ARCHIVE_DIR --rd benchmarks/results/rd.json [--name N]

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
from pfnr_codec.container import FORMAT_VERSION, FRAMING_BYTES, SessionChunk, session_to_bytes
from pfnr_codec.entropy import decode_latents, encode_latents

NAME = re.compile(r"(?P<clip>.+)_q(?P<quality>\d+)\.pfnr$")
CURRENT = ".".join(map(str, FORMAT_VERSION))


def recode(path: Path) -> dict[str, float]:
    """Bytes of the archive at `path` as stored, and with its latents coded as the current format
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
            cells = values.shape[0]
            for c in range(values.shape[1]):
                channel = values[:, c].reshape(cells, -1)
                width = values.shape[3]
                data = encode_latents(channel, loaded.coder, width)
                decoded = decode_latents(data, *channel.shape, loaded.coder, width)
                if not np.array_equal(decoded, channel):
                    raise AssertionError(f"{path}: {name}/{c} does not decode to its values")
                before = len(streams[f"{name}/{c}"])
                streams[f"{name}/{c}"] = data
                latents_before += before
                latents_after += len(data)
                sizes = grids.setdefault(name, [0, 0])
                sizes[0] += before
                sizes[1] += len(data)
        file_bytes += len(session_to_bytes(SessionChunk(chunk.meta, streams))) + FRAMING_BYTES
        table_only += len(session_to_bytes(chunk)) + FRAMING_BYTES  # old streams, new table
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
    args = parser.parse_args(argv)

    machine, records = read_records(args.rd)
    points = {(r.clip, r.settings.get("quality")): r for r in records if r.codec == "pfnr"}
    rows, stored, recoded, measured = [], [], [], {}
    for path in sorted(args.archives.glob("*.pfnr")):
        match = NAME.match(path.name)
        key = match and (match["clip"], int(match["quality"]))
        if key not in points:
            continue
        record = points[key]
        sizes = recode(path)
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
        f"bpp {CURRENT}",
        "latents -%",
        "fine -%",
        "table -B",
        "file -%",
    ]
    write_markdown(
        args.out / f"{args.name}.md",
        f"Latents streams (format {CURRENT}) on the sessions of an RD run",
        machine,
        [
            f"The archives of the RD run in `{args.rd.name}` (same frames, same PSNR), their "
            f"latent channels coded again as format {CURRENT} codes them (each decodes back to "
            f"the same integers) and the session chunk laid out as {CURRENT} lays it out; `-%` is "
            "the share of "
            "bytes saved (latents: all grids; fine: the quarter-size grid), `table -B` the bytes "
            "the packed stream table saves.",
            markdown_table(rows, header),
            "BD-rate of pfnr against each anchor of that run, with the sizes as stored and as "
            f"{CURRENT} codes them (negative = fewer bits than the anchor at equal PSNR):",
            markdown_table(bd, ["clip", "anchor", "BD-rate % stored", f"BD-rate % {CURRENT}"]),
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
