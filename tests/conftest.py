"""Shared fixtures: tiny synthetic videos on disk, and a two-session archive made once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pfnr_codec.api import EncodeOptions, decode_session, encode_video
from pfnr_codec.video import write_video

from synthetic import synthetic_frames

CLIPS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"
TINY = EncodeOptions(preset="tiny", epochs=6, device="cpu")


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> list[Path]:
    """Three lossless clips with odd sizes and different content."""
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for i, (t, h, w) in enumerate([(9, 45, 67), (7, 45, 67), (8, 37, 53)]):
        path = folder / f"clip{i + 1}.mkv"
        write_video(synthetic_frames(t, h, w, seed=20 + i), path, fps=24)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def two_sessions(clips, tmp_path_factory) -> dict:
    """An archive with sessions 1 and 2, plus session 1's frames decoded before session 2 existed."""
    archive = tmp_path_factory.mktemp("archive") / "two.pfnr"
    first = encode_video(archive, clips[0], TINY)
    before = decode_session(archive, 1, size="working")
    one_session = archive.with_name("one.pfnr")
    shutil.copyfile(archive, one_session)
    second = encode_video(archive, clips[1], TINY)
    return {
        "archive": archive,
        "one_session": one_session,
        "reports": [first, second],
        "before": before,
    }
