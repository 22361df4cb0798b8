"""`pfnr demo`: the whole product on two real clips shipped in `samples/`, in a few minutes.

Encodes the clips as sessions 1 and 2 of one archive, decodes session 1 before and after session 2 is
added, and checks the two decodes are byte-identical: the forget-free property, shown end to end.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .api import EncodeOptions, decode_session, encode_video, inspect_archive
from .errors import InputError
from .train import Progress

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIPS = ("bunny.mp4", "bikes.mp4")


def run_demo(
    folder: Path,
    minutes: float,
    on_start: Callable[[str], None],
    on_progress: Callable[[Progress], None],
) -> dict[str, Any]:
    """Runs the demo in `folder` (replacing an earlier demo archive there); returns its figures."""
    clips = [SAMPLES / name for name in CLIPS]
    missing = [str(c) for c in clips if not c.exists()]
    if missing:
        raise InputError(f"demo clips not found: {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "demo.pfnr"
    if archive.exists():
        archive.unlink()
    options = EncodeOptions(preset="cpu", minutes=minutes, epochs=300)
    on_start(f"session 1: {clips[0].name}")
    first = encode_video(archive, clips[0], options, on_progress)
    before = decode_session(archive, 1, size="working")
    on_start(f"session 2: {clips[1].name}")
    second = encode_video(archive, clips[1], options, on_progress)
    after = decode_session(archive, 1, size="working", reference=clips[0])
    digest_before = hashlib.sha256(before.frames.tobytes()).hexdigest()
    digest_after = hashlib.sha256(after.frames.tobytes()).hexdigest()
    frames_dir = folder / "session1"
    shutil.rmtree(frames_dir, ignore_errors=True)
    from .video import write_video

    write_video(after.frames, frames_dir, after.fps)
    info = inspect_archive(archive)
    identical = digest_before == digest_after
    lines = [
        f"session 1 ({first.name}): {first.psnr:.2f} dB at {first.bpp:.4f} bpp, "
        f"{first.bytes:,} bytes",
        f"session 2 ({second.name}): {second.psnr:.2f} dB at {second.bpp:.4f} bpp, "
        f"{second.bytes:,} bytes, {second.reused_share:.0%} of its weights reused from session 1",
        f"session 1 decoded before and after session 2 was added: "
        f"{'byte-identical' if identical else 'DIFFERENT'} (sha256 {digest_after[:16]}...)",
        f"session 1 against its source: {after.psnr:.2f} dB PSNR, MS-SSIM {after.ms_ssim:.4f}, "
        f"decoded at {after.frames_per_second:.0f} frames/s",
        f"archive {archive}: {info.file_bytes:,} bytes, {info.bpp:.4f} bpp over both sessions; "
        f"frames of session 1 in {frames_dir}/",
    ]
    return {
        "archive": str(archive),
        "identical": identical,
        "sessions": [first.to_dict(), second.to_dict()],
        "archive_bytes": info.file_bytes,
        "archive_bpp": info.bpp,
        "lines": lines,
    }
