"""The notebook API: `pfnr_codec.encode / decode / info` on paths or uint8 arrays.

A thin layer over `api`: an array is written to a lossless temporary video first (so an array and
the same frames in a file encode identically), keyword options map onto `EncodeOptions`.
"""

from __future__ import annotations

import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from .api import (
    ArchiveInfo,
    DecodeResult,
    EncodeOptions,
    SessionReport,
    decode_session,
    encode_video,
    inspect_archive,
)
from .errors import ConfigError
from .video import write_video

ARRAY_NAME = "array"  # the session name and source of an encoded array, unless `name` is given


def encode(
    video: str | Path | np.ndarray,
    archive: str | Path = "archive.pfnr",
    *,
    fps: float = 25.0,
    **options: Any,
) -> SessionReport:
    """Add `video` (a path, or uint8 frames (T, H, W, 3) at `fps`) to `archive` as a new session.

    `options` are `EncodeOptions` fields: preset, quality, minutes, epochs, capacity, bits, ...
    """
    known = {f.name for f in fields(EncodeOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown encode option(s) {', '.join(unknown)}; known: {sorted(known)}")
    if isinstance(video, np.ndarray):
        options.setdefault("name", ARRAY_NAME)
        with tempfile.TemporaryDirectory(prefix="pfnr-array-") as folder:
            path = write_video(video, Path(folder) / f"{ARRAY_NAME}.mkv", fps)
            return encode_video(Path(archive), path, EncodeOptions(**options))
    return encode_video(Path(archive), Path(video), EncodeOptions(**options))


def decode(archive: str | Path, session: int, **options: Any) -> DecodeResult:
    """Frames of `session` (1-based) as `result.frames`, uint8 (T, H, W, 3), with BPP and, given
    `reference=`, PSNR / MS-SSIM. Options: frames=(start, end), size, exact, device, reference."""
    if isinstance(options.get("reference"), str):
        options["reference"] = Path(options["reference"])
    return decode_session(Path(archive), session, **options)


def info(archive: str | Path) -> ArchiveInfo:
    """What `pfnr info` shows: sessions, bytes by part, BPP, free share per layer."""
    return inspect_archive(Path(archive))
