"""Rebuild the sample clips shipped in samples/ from the source clips (see samples/README.md).

    python samples/make_samples.py [--source DIR]

DIR defaults to ../shared/data/clips relative to the repository root. Each sample is the first 24
frames of its source, area-downscaled with pfnr_codec.video.resize_frames and written as H.264
(crf 14, yuv420p, 25 fps) with pfnr_codec.video.write_video.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pfnr_codec.video import read_video, resize_frames, write_video  # noqa: E402

# name -> (source file, (height, width))
SAMPLES = {
    "bunny.mp4": ("bigbuckbunny.mp4", (180, 320)),
    "bikes.mp4": ("bikes.mp4", (136, 320)),
}
FRAMES = (0, 24)
FPS = 25.0
CRF = 14


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parent.parent / "shared/data/clips")
    args = parser.parse_args()
    for name, (source, (height, width)) in SAMPLES.items():
        frames, _ = read_video(args.source / source, FRAMES)
        small = resize_frames(frames, height, width)
        out = write_video(small, HERE / name, FPS, crf=CRF, pix_fmt="yuv420p")
        print(f"{out.name}: {len(small)} frames {width}x{height}, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
