"""Scene cuts: found where the picture changes at once, not where it moves; stored and replayed."""

from __future__ import annotations

import numpy as np
import pytest

from pfnr_codec.api import EncodeOptions, decode_session, encode_video, inspect_archive
from pfnr_codec.container import read_archive
from pfnr_codec.errors import ArchiveError
from pfnr_codec.scenes import histogram_distances, scene_starts
from pfnr_codec.session_meta import SessionMeta
from pfnr_codec.video import write_video

from synthetic import synthetic_frames, textured_frames


def _first(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))  # (T, H, W, 3) -> (T, 3, H, W)


def _cut_clip(lengths: tuple[int, ...], seeds: tuple[int, ...], size=(30, 44)) -> np.ndarray:
    """(T, H, W, 3): one synthetic scene per length, each from its own seed."""
    return np.concatenate(
        [synthetic_frames(n, *size, seed=s) for n, s in zip(lengths, seeds, strict=True)]
    )


def test_cuts_between_unrelated_scenes_are_found_and_nothing_else():
    frames = _cut_clip((7, 9, 6), (1, 2, 3))
    assert scene_starts(_first(frames)) == (0, 7, 16)
    assert scene_starts(_first(synthetic_frames(20, 30, 44, seed=1))) == (0,)


def test_fast_motion_is_no_cut():
    """A texture panning one pixel a frame changes many pixels every frame, and its histogram
    little: no scene starts."""
    frames = textured_frames(16, 30, 44, seed=4, cell=1)
    assert np.abs(np.diff(frames.astype(float), axis=0)).mean() > 20  # a lot moves
    assert scene_starts(_first(frames)) == (0,)


def test_cuts_too_close_to_the_last_one_are_ignored():
    frames = _cut_clip((6, 2, 6), (1, 2, 3))  # a two-frame flash
    distances = histogram_distances(_first(frames))
    assert distances[6] > 0.3 and distances[8] > 0.3
    assert scene_starts(_first(frames)) == (0, 6)


@pytest.mark.parametrize(
    "scenes",
    [[], [1], [0, 0], [0, 3, 2], [0, -1], [0, 12], [0, True], "0", [0, 2.0]],
)
def test_scenes_of_a_crafted_session_are_refused(scenes):
    with pytest.raises(ArchiveError, match="scenes"):
        SessionMeta.from_dict({"frames": 12, "scenes": scenes})


def test_scenes_count_only_in_files_that_know_them():
    """A `scenes` key in a file before 1.3 is ignored by decoding, and so by what reports show."""
    meta = SessionMeta.from_dict({"frames": 12, "scenes": [0, 6]})
    assert meta.scenes_in((1, 2)) == (0,)
    assert meta.scenes_in((1, 3)) == (0, 6)


def test_a_session_with_cuts_stores_its_scenes_and_decodes_as_encoded(tmp_path):
    clip = tmp_path / "cuts.mkv"
    write_video(_cut_clip((6, 7), (11, 12)), clip, fps=25)
    archive = tmp_path / "a.pfnr"
    report = encode_video(archive, clip, EncodeOptions(preset="tiny", epochs=3, device="cpu"))
    assert report.scenes == 2
    meta = read_archive(archive).sessions[0].meta
    assert meta["scenes"] == [0, 6]
    assert SessionMeta.from_dict(meta).scenes == (0, 6)
    info = inspect_archive(archive).sessions[0]
    assert (info.scenes, info.recoveries) == (2, report.recoveries) and report.recoveries >= 0
    assert decode_session(archive, 1, device="cpu").matches_encode is True
