"""A decoded frame beside its source, to look at rather than read about.

    python -m benchmarks.frames ARCHIVE SOURCE [--session 1] [--frame N] [--out PNG]

Decodes one frame of a session at the working size, resizes the source frame the way encode did,
and draws both, whole and as a detail crop (benchmarks/plot.py), with the frame's PSNR.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import RESULTS_DIR
from benchmarks.plot import plot_side_by_side
from pfnr_codec.api import decode_session
from pfnr_codec.metrics import psnr
from pfnr_codec.video import read_video, resize_frames


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("source", type=Path, help="the session's source video")
    parser.add_argument("--session", type=int, default=1)
    parser.add_argument("--frame", type=int, default=None, help="default: the middle one")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    whole = decode_session(args.archive, args.session, size="working", frames=(0, None))
    index = whole.frames.shape[0] // 2 if args.frame is None else args.frame
    decoded = whole.frames[index]
    source, _ = read_video(args.source, (index, index + 1))
    source = resize_frames(source, *decoded.shape[:2])[0]
    score = psnr(decoded[None], source[None])
    bpp = whole.bpp
    out = args.out or RESULTS_DIR / f"frame_{args.source.stem}.png"
    title = f"{args.source.name}, frame {index}: {score:.2f} dB; session at {bpp:.3f} bpp"
    print(plot_side_by_side(source, decoded, out, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
