"""pfnr points for the benchmarks: encode through the public API, decode, measure one record.

Each RD point is a fresh one-session archive; its rate is the whole file (header included), the
bytes a user would send for that one video. Quality is measured here against the benchmark's own
frames (the same ones the anchors code), not taken from the encoder's report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.common import Clip, Record, bits_per_pixel, quality
from pfnr_codec.api import EncodeOptions, decode_session, encode_video, inspect_archive
from pfnr_codec.config import DEFAULT_QUALITY


@dataclass(frozen=True)
class Point:
    """One pfnr setting of an RD sweep: a quality level (`pfnr encode --quality`)."""

    quality: int = DEFAULT_QUALITY

    @property
    def tag(self) -> str:
        return f"q{self.quality}"


SWEEPS = {
    "quick": [Point(3), Point(4)],
    "full": [Point(2), Point(3), Point(4), Point(5)],
}
# An epoch cap no 2-core run reaches: with it, a benchmark's minutes are the whole budget.
UNCAPPED_EPOCHS = 10_000
# The full sweep's budget is the product's: 10 minutes of training per session (the epoch cap is
# out of reach on 2 cores, so the time decides); quick runs are for checking the benchmark itself.
BUDGETS = {
    "quick": {"epochs": 60, "minutes": 0.2},
    "full": {"epochs": UNCAPPED_EPOCHS, "minutes": 10.0},
}


def whole_clip_options(
    clip: Clip, device: str, minutes: float | None, epochs: int = UNCAPPED_EPOCHS, **options
) -> EncodeOptions:
    """Encode options for all of ``clip``'s frames under a budget; ``options`` set the rest."""
    return EncodeOptions(
        epochs=epochs, minutes=minutes, frames=(0, clip.shape[0]), device=device, **options
    )


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
            "scenes": report.scenes,
            "recoveries": report.recoveries,
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
    on_point: Callable[[list[Record]], None] | None = None,
) -> list[Record]:
    """One record per sweep point on ``clip``; `on_point` sees the records so far after each."""
    budget = budget or BUDGETS[mode]
    base = whole_clip_options(
        clip, device, budget["minutes"], budget["epochs"], preset=preset, seed=0
    )
    records = []
    for point in points or SWEEPS[mode]:
        options = replace(base, quality=point.quality)
        settings = {
            "curve": preset,
            "quality": point.quality,
            "epochs": budget["epochs"],
            "minutes": budget["minutes"],
        }
        archive = work / f"{clip.name}_{point.tag}.pfnr"
        records.append(encode_point(clip, archive, options, device_label, versions, settings))
        if on_point is not None:
            on_point(records)
    return records
