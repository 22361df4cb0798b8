"""Room for every session: growth keeps old sessions byte-identical; a full archive that cannot
grow refuses clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfnr_codec.api import EncodeOptions, decode_session, encode_video, inspect_archive
from pfnr_codec.archive import load_archive
from pfnr_codec.config import PRESETS
from pfnr_codec.errors import ArchiveError, UsageError
from pfnr_codec.growth import SharedWeights, check_grow, growth_for, layer_widths, stored_weights
from pfnr_codec.video import write_video

from synthetic import synthetic_frames

TINY = EncodeOptions(preset="tiny", epochs=3, device="cpu")


@pytest.fixture(scope="module")
def ten_sessions(tmp_path_factory):
    """Ten tiny sessions appended in a row, every earlier session decoded after each append."""
    folder = tmp_path_factory.mktemp("ten")
    archive = folder / "ten.pfnr"
    decodes: list[list[bytes]] = []  # decodes[j][i]: session i+1 decoded after session j+1
    reports = []
    for j in range(10):
        clip = folder / f"clip{j}.mkv"
        write_video(synthetic_frames(4, 30, 44, seed=40 + j), clip, fps=25)
        reports.append(encode_video(archive, clip, TINY))
        decodes.append(
            [
                decode_session(archive, i + 1, size="working", exact=True).frames.tobytes()
                for i in range(j + 1)
            ]
        )
    return archive, decodes, reports


def test_every_earlier_session_decodes_byte_identical_after_each_append(ten_sessions):
    _, decodes, _ = ten_sessions
    for j in range(1, 10):
        for i in range(j):
            assert decodes[j][i] == decodes[i][i], f"session {i + 1} changed after {j + 1}"


def test_later_sessions_grow_and_reuse_the_first_ones_weights(ten_sessions):
    archive, _, reports = ten_sessions
    info = inspect_archive(archive)
    base = PRESETS["tiny"].model_config(30, 44)
    assert reports[0].reused_share == 0.0
    for report in reports[1:]:
        assert report.new_weights > 0  # never a session without weights of its own
        assert 0.3 < report.reused_share < 1.0  # it reuses the first session's frozen weights
    per_session = sum(growth_for(base, 0.25))
    loaded = load_archive(archive, torch.device("cpu"))
    assert [sum(g) for g in loaded.grows] == [0] + [per_session] * 9
    # Compute stays bounded: a session's own network is the base plus its own channels.
    assert loaded.session_model(10).config == loaded.session_model(2).config
    assert info.model_weights > 3 * base.weight_count


def test_session_views_round_trip_through_the_store_and_never_see_each_other():
    config = PRESETS["tiny"].model_config(30, 44)
    grows = [(0,) * 4, growth_for(config, 0.5), growth_for(config, 0.25)]
    store = SharedWeights(config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    frozen = []
    for session, grow in enumerate(grows, start=1):
        view = store.view(session, grow)
        for mw in view.masked_weights().values():
            claim = torch.rand(mw.mask_shape, generator=generator) < 0.5
            if session > 1:  # a grown session claims all it can, never what is used
                claim = ~mw.used
            values = torch.randn(mw.shape, generator=generator)
            mw.freeze(claim, values)
        store.absorb(session, view)
        frozen.append(
            {n: (mw.frozen.clone(), mw.used.clone()) for n, mw in view.masked_weights().items()}
        )
    for session, grow in enumerate(grows, start=1):
        again = store.view(session, grow)
        for name, mw in again.masked_weights().items():
            values, used = frozen[session - 1][name]
            assert torch.all(mw.used[used])  # what it used is still used
            used = used.expand(mw.shape)
            assert torch.equal(mw.frozen[used], values[used]), (session, name)
    assert store.stored_weights() == stored_weights(config, grows)


def test_a_full_frame_time_archive_refuses_a_new_session_clearly(tmp_path, clips):
    archive = tmp_path / "full.pfnr"
    options = EncodeOptions(preset="cpu-time", epochs=1, capacity=1.0, device="cpu")
    encode_video(archive, clips[0], options)
    before = archive.read_bytes()
    with pytest.raises(UsageError, match="is full"):
        encode_video(archive, clips[1], EncodeOptions(epochs=1, device="cpu"))
    assert archive.read_bytes() == before


def test_a_crafted_growth_is_refused():
    config = PRESETS["tiny"].model_config(30, 44)
    layers = len(layer_widths(config))
    assert check_grow(config, None, "x") == (0,) * layers
    for bad in ([1] * (layers + 1), [-1] * layers, [10**6] * layers, [True] * layers, "1,1"):
        with pytest.raises(ArchiveError, match="grow"):
            check_grow(config, bad, "x")
    time_config = PRESETS["cpu-time"].model_config(30, 44)
    with pytest.raises(ArchiveError, match="grow"):
        check_grow(time_config, [1] * layers, "x")
    assert np.all(np.array(growth_for(config, 0.25)) >= 1)
