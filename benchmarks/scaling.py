"""Scaling: epochs per second of one session trained by 1 and by N processes (torchrun), side by side.

    python -m benchmarks.scaling                       # CPU, gloo: 1 and 2 processes
    python -m benchmarks.scaling --device cuda --processes 1 2 4 8

Each row is a real `pfnr encode` of the same clip, frames and epochs in a fresh process (under
`torch.distributed.run` when N > 1), one after another, never two at once. Every process trains
`--batch-size` frames per step, so N processes take N times the frames per step and one N-th of
the steps per epoch. On the CPU the N processes share the machine's cores (one thread each
when N > 1, as torchrun sets), so the figure says what data parallelism costs or buys there; on
GPUs each process has its own device. PSNR of each run is reported beside it (equal epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    DEFAULT_CLIPS_DIR,
    RESULTS_DIR,
    machine_info,
    markdown_table,
    write_markdown,
)


def run_encode(
    clip: Path, archive: Path, processes: int, args: argparse.Namespace
) -> dict[str, float]:
    """One encode; its wall time, epochs and PSNR as the CLI reports them."""
    command = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc-per-node", str(processes)]
    command += ["-m", "pfnr_codec", "encode", str(clip), "-a", str(archive), "--json"]
    command += ["--preset", args.preset, "--device", args.device, "--epochs", str(args.epochs)]
    command += ["--frames", f"0:{args.frames}", "--batch-size", str(args.batch_size)]
    env = dict(os.environ)
    if processes > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.monotonic() - began
    if done.returncode:
        raise SystemExit(f"encode with {processes} processes failed: {done.stderr[-500:]}")
    session = json.loads(done.stdout)["sessions"][0]
    return {
        "processes": processes,
        "seconds": seconds,
        "encode_seconds": session["encode_seconds"],
        "epochs": session["epochs"],
        "psnr": session["psnr"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "clip", nargs="?", type=Path, default=DEFAULT_CLIPS_DIR / "bigbuckbunny.mp4"
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=2, help="frames per step per process")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for n in args.processes:
            rows.append(run_encode(args.clip, Path(work) / f"n{n}.pfnr", n, args))
            print(json.dumps(rows[-1]), flush=True)
    single = rows[0]["encode_seconds"] / rows[0]["epochs"]
    table = markdown_table(
        [
            (
                r["processes"],
                r["epochs"],
                r["encode_seconds"],
                r["epochs"] / r["encode_seconds"],
                single / (r["encode_seconds"] / r["epochs"]),
                r["psnr"],
            )
            for r in rows
        ],
        ["processes", "epochs", "encode s", "epochs/s", "speed-up", "PSNR dB"],
    )
    machine = machine_info(args.device)
    setup = (
        f"Clip {args.clip.name}, first {args.frames} frames, preset {args.preset}, "
        f"{args.epochs} epochs, {args.batch_size} frames per step per process; encode s is the "
        "session's own time (reading, training, rendering, coding), without process start-up."
    )
    write_markdown(args.out / "scaling.md", "Scaling with torchrun", machine, [setup, table])
    (args.out / "scaling.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "args": vars(args) | {"clip": str(args.clip), "out": str(args.out)},
                "rows": rows,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
