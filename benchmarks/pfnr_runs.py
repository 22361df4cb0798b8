"""pfnr points for the benchmarks: encode through the public API, decode, measure one record.

Each RD point is a fresh one-session archive; its rate is the whole file (header included), the
bytes a user would send for that one video. Quality is measured here against the benchmark's own
frames (the same ones the anchors code), not taken from the encoder's report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.common import Clip, Record, bits_per_pixel, quality
from pfnr_codec.api import EncodeOptions, decode_session, encode_video, inspect_archive


@dataclass(frozen=True)
class Point:
    """One pfnr setting of an RD sweep."""

    width_scale: float = 1.0
    capacity: float | None = None  # None: the preset's
    bits: int | None = None

    @property
    def tag(self) -> str:
        cap = "preset" if self.capacity is None else f"{self.capacity:g}"
        bits = "preset" if self.bits is None else str(self.bits)
        return f"w{self.width_scale:g}_c{cap}_b{bits}"


SWEEPS = {
    # Model width moves the rate most; a lower capacity and 5-bit weights add points in between.
    "quick": [Point(0.6), Point(1.0)],
    "full": [
        Point(0.5),
        Point(0.75),
        Point(1.0),
        Point(1.4),
        Point(1.0, capacity=0.15),
        Point(1.0, bits=5),
    ],
}
BUDGETS = {"quick": {"epochs": 60, "minutes": 0.2}, "full": {"epochs": 150, "minutes": 3.0}}


def encode_point(
    clip: Clip,
    archive: Path,
    options: EncodeOptions,
    device_label: str,
    versions: str,
    settings: dict,
) -> Record:
    """Encode ``clip`` (its frame range) into a new archive and measure the decoded session."""
    if archive.exists():
        archive.unlink()
    archive.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = encode_video(archive, clip.path, options)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = decode_session(archive, 1, size="working", device=options.device)
    decode_s = time.perf_counter() - t0
    frames = decoded.frames
    if frames.shape != clip.frames.shape:
        raise RuntimeError(f"pfnr decoded {frames.shape}, benchmark frames are {clip.frames.shape}")
    psnr, msssim = quality(clip.frames, frames)
    info = inspect_archive(archive)
    t, h, w = clip.shape
    return Record(
        clip=clip.name,
        codec="pfnr",
        settings={**settings, "capacity": report.capacity, "bits": report.bits},
        frames=t,
        height=h,
        width=w,
        bytes=info.file_bytes,
        bpp=bits_per_pixel(info.file_bytes, t, h, w),
        psnr=psnr,
        ms_ssim=msssim,
        encode_s=encode_s,
        decode_s=decode_s,
        device=device_label,
        versions=versions,
        extra={
            "session_bytes": report.bytes,
            "breakdown": info.breakdown,
            "model_weights": info.model_weights,
            "new_weights": report.new_weights,
            "epochs": report.epochs,
            "render_s": decoded.seconds,
            "decode_fps": decoded.frames_per_second,
            "bit_exact": decoded.matches_encode,
            "encoder_psnr": report.psnr,
        },
    )


def sweep(
    clip: Clip,
    mode: str,
    preset: str,
    device: str,
    device_label: str,
    versions: str,
    work: Path,
    points: list[Point] | None = None,
    budget: dict | None = None,
) -> list[Record]:
    """One record per sweep point on ``clip``."""
    budget = budget or BUDGETS[mode]
    base = EncodeOptions(
        preset=preset,
        epochs=budget["epochs"],
        minutes=budget["minutes"],
        frames=(0, clip.shape[0]),
        device=device,
        seed=0,
    )
    records = []
    for point in points or SWEEPS[mode]:
        options = replace(
            base, width_scale=point.width_scale, capacity=point.capacity, bits=point.bits
        )
        settings = {
            "curve": preset,
            "width_scale": point.width_scale,
            "capacity": point.capacity,
            "bits": point.bits,
            "epochs": budget["epochs"],
            "minutes": budget["minutes"],
        }
        archive = work / f"{clip.name}_{point.tag}.pfnr"
        records.append(encode_point(clip, archive, options, device_label, versions, settings))
    return records
