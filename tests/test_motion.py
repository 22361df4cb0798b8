"""Global motion and latent cells that follow it (format 1.5)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from pfnr_codec import container, motion
from pfnr_codec.api import EncodeOptions, decode_session, encode_video
from pfnr_codec.bitstream import MOTION_STREAMS
from pfnr_codec.container import read_archive
from pfnr_codec.entropy import encode_ints, get_coder
from pfnr_codec.errors import ArchiveError
from pfnr_codec.model.latents import LatentGrid
from pfnr_codec.motion import (
    MAX_STEP,
    MOTION_UNIT,
    global_positions,
    position_steps,
    positions_from_steps,
)
from pfnr_codec.video import write_video

from synthetic import synthetic_frames, textured_frames


def _channels_first(frames: np.ndarray) -> np.ndarray:
    return frames.transpose(0, 3, 1, 2)


def test_a_pan_is_found_to_the_unit_and_a_cut_keeps_the_position():
    """The textured clip pans one pixel a frame to the left; frame 4 starts a new scene, so
    nothing is measured across it: its position is the frame before's."""
    frames = _channels_first(textured_frames(8, 48, 64, seed=3))
    positions = global_positions(frames)
    assert positions[:, 0].tolist() == [0] * 8
    assert positions[:, 1].tolist() == [-MOTION_UNIT * k for k in range(8)]
    cut = global_positions(frames, (0, 4))
    steps = position_steps(cut)
    assert steps[4].tolist() == [0, 0]
    assert steps[5:, 1].tolist() == [-MOTION_UNIT] * 3


def test_a_still_picture_has_no_motion():
    still = _channels_first(np.repeat(synthetic_frames(1, 40, 56, seed=4), 5, axis=0))
    assert not global_positions(still).any()


def _shifted_texture(shifts: list[float], height: int = 40, width: int = 56) -> np.ndarray:
    """Frames (T, 3, H, W) uint8 of one smooth random texture moved right by each of `shifts`
    pixels (a phase ramp in its spectrum: a sub-pixel shift without interpolation's blur)."""
    rng = np.random.default_rng(6)
    spectrum = np.fft.fft2(rng.normal(size=(height, width)))
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    spectrum *= np.exp(-((fy**2 + fx**2) / 0.02))  # smooth: the shift is what differs
    frames = []
    for dx in shifts:
        moved = np.fft.ifft2(spectrum * np.exp(-2j * np.pi * fx * dx)).real
        moved = 128 + 100 * moved / np.abs(moved).max()
        frames.append(np.repeat(np.clip(moved, 0, 255).astype(np.uint8)[None], 3, axis=0))
    return np.stack(frames)


def test_a_scene_slower_than_the_still_step_keeps_its_position(monkeypatch):
    """A picture that crawls a tenth of a pixel a frame (0.7 pixel over the clip) holds still:
    no step reaches STILL_STEP, so its noise adds up to no drift (measured without the rule, it
    drifts). Once the camera moves a pixel in the same scene, the whole scene is followed as
    without the rule, its crawl included; a cut before the move leaves the crawl's scene still
    and follows the next one to the unit."""
    crawl = _shifted_texture([0.1 * k for k in range(8)])
    frames = _shifted_texture([0.1 * k for k in range(4)] + [1.3 + k for k in range(4)])
    cut = global_positions(frames, (0, 4))
    assert not global_positions(crawl).any()
    followed = global_positions(frames)
    monkeypatch.setattr(motion, "STILL_STEP", 0.0)
    assert global_positions(crawl).any()
    assert np.array_equal(followed, global_positions(frames))
    assert not cut[:4].any()
    assert cut[4:, 1].tolist() == [0] + [MOTION_UNIT * k for k in range(1, 4)]
    assert not cut[:, 0].any()


def test_training_skips_the_shifts_of_still_frames_and_reads_the_same():
    """With gradients on (training), a batch whose frames sit where their cells do takes the
    plain mix instead of shifting: within rounding what the shifting path (decoding) reads; a
    batch with a moved frame shifts either way."""
    grid = LatentGrid(12, 4, 2, 3, 5)
    with torch.no_grad():
        grid.values.copy_(torch.randint(-9, 10, grid.values.shape).float())
    positions = torch.zeros(12, 2)
    positions[8:, 1] = 3.0  # the camera moves at frame 8, where the last cell sits
    grid.follow(positions, (1.0, 1.0))
    shifts = []
    moved = grid._moved
    grid._moved = lambda *args: shifts.append(1) or moved(*args)
    # Frames 0-3 read cells 0 and 4 (both at 0); frames 6 and 9 read cell 8, which moved.
    for frames, shifted_in_training in ((torch.tensor([0, 1, 2, 3]), 0), (torch.tensor([6, 9]), 2)):
        shifts.clear()
        with torch.no_grad():
            decoded = grid(frames)
        assert len(shifts) == 2  # decoding always shifts both cells
        shifts.clear()
        trained = grid(frames)
        assert trained.requires_grad and len(shifts) == shifted_in_training, frames
        assert torch.allclose(trained, decoded, atol=1e-5), frames


def test_stored_steps_give_back_the_positions_and_are_bounded():
    positions = np.array([[0, 0], [3, -8], [3, -17], [-40, 2]])
    assert np.array_equal(positions_from_steps(position_steps(positions)), positions)
    with pytest.raises(ArchiveError, match="motion step"):
        positions_from_steps(np.array([[0, 0], [MAX_STEP + 1, 0]]))


def _panned_grid(frames: int, step: int, width: int) -> tuple[LatentGrid, torch.Tensor]:
    """A 1 x 1 x `width` grid whose cells hold one random row seen from a camera panning one
    column a frame to the right (so the row moves left), following that motion."""
    grid = LatentGrid(frames, step, 1, 1, width)
    generator = torch.Generator().manual_seed(0)
    ramp = torch.randint(-20, 21, (width + frames * 2,), generator=generator).float()
    with torch.no_grad():
        for i, frame in enumerate(grid.cell_frames().tolist()):
            grid.values[i, 0, 0] = ramp[frame : frame + width]
    positions = torch.zeros(frames, 2)
    positions[:, 1] = -torch.arange(frames, dtype=torch.float32)  # content moves left
    grid.follow(positions, (1.0, 1.0))
    return grid, ramp


def test_a_following_grid_gives_each_frame_the_content_where_it_sees_it():
    """Between two cells, a frame reads each cell moved to its own position, so where the cells
    cover it, it sees the row exactly as its own camera would (no double exposure); a grid that
    does not follow mixes two offset rows instead."""
    frames, step, width = 9, 4, 12
    grid, ramp = _panned_grid(frames, step, width)
    out = grid(torch.arange(frames))[:, 0, 0]  # (frames, width)
    for k in range(frames):
        covered = width - (step - 1)  # the later cell has moved at most step - 1 columns away
        assert torch.allclose(out[k, :covered], ramp[k : k + covered], atol=1e-4), k
    still = LatentGrid(frames, step, 1, 1, width)
    with torch.no_grad():
        still.values.copy_(grid.values)
    assert not torch.allclose(still(torch.tensor([2]))[0, 0, 0], ramp[2 : 2 + width])


def test_where_one_cell_has_no_content_the_other_is_read_at_full_weight():
    """The last columns of frame 2 lie outside cell 0 (moved left by two columns) but inside
    cell 1: they read cell 1's values, not half of them."""
    grid, ramp = _panned_grid(9, 4, 12)
    out = grid(torch.tensor([2]))[0, 0, 0]
    assert torch.allclose(out[-2:], ramp[2 + 10 : 2 + 12], atol=1e-4)


def test_no_motion_reads_as_a_grid_that_does_not_follow():
    plain = LatentGrid(11, 4, 2, 3, 5)
    with torch.no_grad():
        plain.values.copy_(torch.randint(-9, 10, plain.values.shape).float())
    follows = copy.deepcopy(plain)
    follows.follow(torch.zeros(11, 2), (2.0, 2.0))
    frames = torch.arange(11)
    assert torch.allclose(follows(frames), plain(frames), atol=1e-5)


def _panned_clip(tmp_path: Path, frames: int = 9, seed: int = 3) -> Path:
    clip = tmp_path / f"pan{seed}.mkv"
    write_video(textured_frames(frames, 32, 48, seed=seed), clip, fps=25)
    return clip


def _encode(archive: Path, clip: Path, **options) -> None:
    encode_video(archive, clip, EncodeOptions(epochs=2, device="cpu", **options))


def test_a_following_session_stores_its_motion_and_decodes_as_encoded(tmp_path: Path):
    archive = tmp_path / "pan.pfnr"
    _encode(archive, _panned_clip(tmp_path), preset="tiny")
    contents = read_archive(archive)
    assert contents.version == container.FORMAT_VERSION >= (1, 5)
    assert contents.header["model"]["follow_motion"] is True
    assert set(MOTION_STREAMS) <= set(contents.sessions[0].streams)
    first = decode_session(archive, 1, size="working", device="cpu")
    assert first.matches_encode
    _encode(archive, _panned_clip(tmp_path, seed=4))
    again = decode_session(archive, 1, size="working", device="cpu")
    assert np.array_equal(again.frames, first.frames)
    assert decode_session(archive, 2, size="working", device="cpu").matches_encode


def test_an_archive_that_does_not_follow_stores_no_motion(tmp_path: Path):
    archive = tmp_path / "still.pfnr"
    _encode(archive, _panned_clip(tmp_path), preset="tiny", model={"follow_motion": False})
    assert not set(MOTION_STREAMS) & set(read_archive(archive).sessions[0].streams)
    assert decode_session(archive, 1, size="working", device="cpu").matches_encode


def test_a_crafted_motion_step_is_refused(tmp_path: Path):
    archive = tmp_path / "pan.pfnr"
    _encode(archive, _panned_clip(tmp_path), preset="tiny")
    contents = read_archive(archive)
    sessions = copy.deepcopy(contents.sessions)
    steps = np.zeros(sessions[0].meta["frames"], dtype=np.int64)
    steps[3] = MAX_STEP + 1
    sessions[0].streams["motion/x"] = encode_ints(steps, get_coder("constriction"))
    crafted = tmp_path / "crafted.pfnr"
    crafted.write_bytes(container.archive_to_bytes(contents.header, sessions))
    with pytest.raises(ArchiveError, match="motion step"):
        decode_session(crafted, 1, size="working", device="cpu")
    del sessions[0].streams["motion/y"]
    crafted.write_bytes(container.archive_to_bytes(contents.header, sessions))
    with pytest.raises(ArchiveError, match="motion/y"):
        decode_session(crafted, 1, size="working", device="cpu")
