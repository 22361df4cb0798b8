"""Fetch real clips that are not in ../shared, for checking pfnr on footage it was not tuned on.

The clips are OpenCV's sample videos as Debian ships them in `opencv-doc` (Apache-2.0, Debian
main): `vtest.avi` (a still camera over a lawn, a road and walkers: fine texture, small moving
people; 795 frames at 768x576), `box.mp4` and `cup.mp4` (a hand-held camera at home: camera
motion; 456 and 217 frames at 640x480) and `Megamind.avi` (an animated film's trailer; 270 frames
at 720x528). They are lossy sources (MPEG-4 part 2, H.264), like most footage a user has.

Usage: python -m benchmarks.external_clips [--out DIR]  (default benchmarks/data/external, ignored
by git), then e.g. python -m benchmarks.rd benchmarks/data/external/box.mp4 --minutes 10 ...

The package is pinned by URL and SHA-256, and so is every clip taken from it, so every machine
measures the same bytes. A .deb is an `ar` archive whose `data.tar.*` holds the files; both are
read with the standard library (no dpkg needed).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from .common import REPO_ROOT

PACKAGE_URL = "https://deb.debian.org/debian/pool/main/o/opencv/opencv-doc_4.6.0+dfsg-12_all.deb"
PACKAGE_SHA256 = "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a"
_DATA = "./usr/share/doc/opencv-doc/examples/data/"
_HTML = "./usr/share/doc/opencv-doc/opencv4/html/"
# clip name -> (member of the package's data archive, SHA-256 of the clip itself)
CLIPS = {
    "vtest.avi": (
        _DATA + "vtest.avi",
        "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
    ),
    "box.mp4": (
        _HTML + "box.mp4.gz",
        "62b744b99403f899707c43398a3822441add6160379ab6dd6c12bde9e3075f8d",
    ),
    "cup.mp4": (
        _HTML + "cup.mp4.gz",
        "37db9cee98f70b1458985a15ad2e5b0183e90e24c281b534afcf812e5986154f",
    ),
    "Megamind.avi": (
        _DATA + "Megamind.avi",
        "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5",
    ),
}
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "data" / "external"
_MAX_PACKAGE_BYTES = 200 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ar_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each member of a System V / GNU `ar` archive (the .deb container)."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"corrupt ar member header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = data[pos + 60 : pos + 60 + size]
        if len(body) != size:
            raise ValueError(f"ar member {name!r} is truncated")
        yield name, body
        pos += 60 + size + (size % 2)  # members are 2-byte aligned


def extract_clips(package: bytes, names: Sequence[str]) -> dict[str, bytes]:
    """The named clips from the package bytes, each checked against its pinned SHA-256."""
    tar_bytes = next(
        (body for name, body in ar_members(package) if name.startswith("data.tar")), None
    )
    if tar_bytes is None:
        raise ValueError("the package has no data.tar member")
    wanted = {CLIPS[name][0]: name for name in names}
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                found[wanted[member.name]] = (
                    gzip.decompress(raw) if member.name.endswith(".gz") else raw
                )
    for name in names:
        if name not in found:
            raise ValueError(f"{name} is not in the package")
        if sha256(found[name]) != CLIPS[name][1]:
            raise ValueError(f"{name}: SHA-256 differs from the pinned one")
    return found


def read_package(local: Path | None) -> bytes:
    """The pinned package's bytes, from `local` or downloaded; refused unless its SHA-256 is the
    pinned one."""
    if local is not None:
        where, data = str(local), local.read_bytes()
    else:
        print(f"downloading {PACKAGE_URL}", file=sys.stderr)
        with urllib.request.urlopen(PACKAGE_URL, timeout=120) as response:  # noqa: S310 (pinned)
            where, data = PACKAGE_URL, response.read(_MAX_PACKAGE_BYTES + 1)
        if len(data) > _MAX_PACKAGE_BYTES:
            raise ValueError(f"{where} is larger than {_MAX_PACKAGE_BYTES} bytes")
    if sha256(data) != PACKAGE_SHA256:
        raise ValueError(f"{where}: SHA-256 differs from the pinned one")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the clips")
    parser.add_argument("--package", type=Path, help="a downloaded opencv-doc .deb (no download)")
    parser.add_argument("clips", nargs="*", default=list(CLIPS), help=f"any of {', '.join(CLIPS)}")
    args = parser.parse_args(argv)
    unknown = [name for name in args.clips if name not in CLIPS]
    if unknown:
        parser.error(f"unknown clip(s) {', '.join(unknown)}; valid: {', '.join(CLIPS)}")
    missing = [name for name in args.clips if not (args.out / name).is_file()]
    if missing:
        try:
            clips = extract_clips(read_package(args.package), missing)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        for name, data in clips.items():
            with tempfile.NamedTemporaryFile(dir=args.out, delete=False) as tmp:
                tmp.write(data)
            shutil.move(tmp.name, args.out / name)
    for name in args.clips:
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
