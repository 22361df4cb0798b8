"""The network's building blocks: encoding, masks, the Fourier Subneural Operator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pfnr_codec.config import PRESETS, ModelConfig, base_grid, latent_cells
from pfnr_codec.errors import ArchiveError
from pfnr_codec.model import PFNR, mask_size, positional_encoding
from pfnr_codec.model.fourier import FourierSubneuralOperator
from pfnr_codec.model.latents import LatentGrid
from pfnr_codec.model.network import frame_times


def test_positional_encoding_depends_only_on_the_sessions_own_time():
    t = frame_times(torch.arange(5), 5).float()
    pe = positional_encoding(t, 8, 1.25)
    assert pe.shape == (5, 16)
    assert torch.allclose(pe[:, 0], torch.sin(math.pi * t))
    assert torch.allclose(pe[:, 8], torch.cos(math.pi * t))
    assert torch.allclose(pe[:, 1], torch.sin(math.pi * 1.25 * t))


@pytest.mark.parametrize("capacity", [0.05, 0.3, 0.5, 0.9])
def test_each_mask_keeps_the_requested_fraction(capacity):
    model = PFNR(PRESETS["tiny"].model_config(30, 44))
    generator = torch.Generator().manual_seed(0)
    for mw in model.masked_weights().values():
        mw.reset_session(generator)
        mw.capacity = capacity
        kept = int(mw.session_mask().sum())
        assert abs(kept - capacity * mw.score.numel()) <= 1
        assert kept == mask_size(mw.score.numel(), capacity)
        effective = mw()
        assert int((effective != 0).sum()) <= kept * mw.expand


def test_masked_forward_passes_gradients_to_scores_and_not_to_frozen_values():
    model = PFNR(PRESETS["tiny"].model_config(30, 44))
    mw = model.masked_weights()["blocks.0.conv.weight"]
    mw.reset_session(torch.Generator().manual_seed(1))
    mw.capacity = 0.5
    mw.used[:2] = True
    mw.frozen[:2] = 1.0
    mw().sum().backward()
    assert mw.score.grad is not None and mw.score.grad.abs().sum() > 0
    assert torch.all(mw.weight.grad[:2] == 0)


def test_conv_masks_cover_whole_kernels():
    model = PFNR(PRESETS["tiny"].model_config(30, 44))
    mw = model.masked_weights()["blocks.0.conv.weight"]
    assert mw.mask_shape[2:] == (1, 1) and mw.expand == 9


def _band_limited(channels: int, h: int, w: int, rows: int, cols: int, scale: int):
    """Random sum of sinusoids below the kept modes, sampled at two resolutions."""
    rng = np.random.default_rng(3)
    small = np.zeros((channels, h, w))
    big = np.zeros((channels, h * scale, w * scale))
    for c in range(channels):
        for ky in range(-rows + 1, rows):
            for kx in range(0, cols):
                a, phase = rng.normal(), rng.uniform(0, 2 * np.pi)
                for grid, n in ((small, 1), (big, scale)):
                    yy, xx = np.meshgrid(np.arange(h * n) / n, np.arange(w * n) / n, indexing="ij")
                    grid[c] += a * np.cos(2 * np.pi * (ky * yy / h + kx * xx / w) + phase)
    return torch.from_numpy(small)[None], torch.from_numpy(big)[None]


def test_fso_with_identity_weights_is_ideal_band_limited_upsampling():
    channels, h, w = 3, 8, 12
    fso = FourierSubneuralOperator(channels, channels, (h, w), 2, (3, 4)).double()
    shape = fso.real.shape
    identity = torch.zeros(shape, dtype=torch.float64)
    for c in range(channels):
        identity[c, c] = 1.0
    small, big = _band_limited(channels, h, w, rows=3, cols=4, scale=2)
    upsampled = fso(small, (identity, torch.zeros(shape, dtype=torch.float64)))
    assert upsampled.shape == big.shape
    assert torch.max(torch.abs(upsampled - big)) < 1e-5


def test_fso_places_negative_frequencies_at_the_end_of_the_larger_grid():
    fso = FourierSubneuralOperator(1, 1, (6, 6), 2, (2, 2)).double()
    shape = fso.real.shape
    real = torch.ones(shape, dtype=torch.float64)
    # A pure negative vertical frequency must stay negative after upsampling.
    yy = torch.arange(6, dtype=torch.float64)[:, None].expand(6, 6)
    x = torch.sin(-2 * math.pi * yy / 6)[None, None]
    y = fso(x, (real, torch.zeros(shape, dtype=torch.float64)))
    fine = torch.arange(12, dtype=torch.float64)[:, None].expand(12, 12) / 2
    assert torch.allclose(y[0, 0], torch.sin(-2 * math.pi * fine / 6), atol=1e-9)


def test_network_output_size_is_base_grid_times_strides():
    for name, (h, w) in {"tiny": (30, 44), "cpu": (720, 1280), "cpu-time": (720, 1280)}.items():
        config = PRESETS[name].model_config(h, w)
        model = PFNR(config)
        for mw in model.masked_weights().values():
            mw.reset_session(torch.Generator().manual_seed(0))
        out = model(torch.arange(2), model.new_head(2))
        assert out.shape == (2, 3, config.height, config.width)
        assert float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1


def test_cpu_preset_working_size_follows_the_aspect_ratio():
    assert PRESETS["cpu"].model_config(720, 1280).height == 180
    assert PRESETS["cpu"].model_config(720, 1280).width == 320
    h, w = base_grid(180 * 320, 20, 272, 640)
    assert abs(h * 20 / (w * 20) - 272 / 640) < 0.1 and h * w * 400 <= 180 * 320
    small = PRESETS["cpu"].model_config(144, 176)
    assert small.height * small.width <= 144 * 176


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_gives_a_header_its_readers_accept(name):
    """A preset whose network broke a header bound would write archives no reader opens."""
    for source in ((720, 1280), (1080, 1920)):
        config = PRESETS[name].model_config(*source)
        assert ModelConfig.from_dict(config.to_dict()) == config
        assert config.height * config.width <= PRESETS[name].target_pixels


def test_gpu_presets_work_at_their_full_size():
    assert PRESETS["gpu"].model_config(720, 1280).height == 720
    assert PRESETS["gpu-1080p"].model_config(1080, 1920).width == 1920


def test_model_config_round_trips_and_rejects_bad_headers():
    config = PRESETS["cpu"].model_config(272, 640)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ArchiveError):
        ModelConfig.from_dict({**config.to_dict(), "surprise": 1})
    with pytest.raises(ArchiveError):
        ModelConfig.from_dict({**config.to_dict(), "strides": [2]})
    with pytest.raises(ArchiveError):
        ModelConfig.from_dict({**config.to_dict(), "channels": [100000] * 3})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("linear_mask_block", 10**12),  # used to count down from it: a hang
        ("stem_hidden", 2**24),  # used to allocate gigabytes before failing
        ("base_channels", 262144),
        ("pe_levels", 2**26),
        ("pe_levels", 1.5),
        ("pe_levels", True),
        ("base_width", "16"),
        ("pe_base", float("nan")),
        ("pe_base", 1e300),
        ("strides", [2] * 40),
        ("fso_modes", [4]),
        ("fso_block", 2.0),
        ("fso_only", 1),
        ("input", "pixels"),
        ("latent_steps", [0]),
        ("latent_steps", [1] * 9),
        ("latent_channels", 10**6),
        ("fine_block", 9),
        ("fine_step", 0),
    ],
)
def test_model_config_from_a_header_names_the_field_out_of_range(field, value):
    data = PRESETS["cpu"].model_config(272, 640).to_dict()
    data[field] = value
    with pytest.raises(ArchiveError, match=field):
        ModelConfig.from_dict(data)


def test_model_config_bounds_the_whole_network_before_building_it():
    data = PRESETS["cpu-time"].model_config(272, 640).to_dict()
    data.update(base_height=100, base_width=100, base_channels=4096, stem_hidden=4096)
    with pytest.raises(ArchiveError, match="shared weights exceed"):
        ModelConfig.from_dict(data)
    for preset in ("paper", "cpu"):
        config = PRESETS[preset].model_config(720, 1280)
        assert config.weight_count == sum(
            mw.weight.numel() for mw in PFNR(config).masked_weights().values()
        )


def test_head_equals_a_1x1_convolution_then_tanh():
    head = PFNR(PRESETS["tiny"].model_config(32, 48)).new_head(1)
    x = torch.randn(2, head.conv.in_channels, 5, 7)
    expected = (torch.tanh(head.conv(x)) + 1) / 2
    assert torch.allclose(head(x), expected, atol=1e-6)


@pytest.mark.parametrize(("frames", "step", "cells"), [(1, 4, 1), (8, 1, 8), (9, 4, 3), (10, 4, 4)])
def test_a_latent_grid_has_a_cell_at_or_after_the_last_frame(frames, step, cells):
    assert latent_cells(frames, step) == cells
    grid = LatentGrid(frames, step, 2, 3, 4)
    assert grid.cells == cells
    assert (grid.cells - 1) * step >= frames - 1


def test_latent_grids_interpolate_linearly_between_cells_and_clamp_past_the_end():
    grid = LatentGrid(10, 4, 1, 1, 1)  # cells at frames 0, 4, 8, 12
    with torch.no_grad():
        grid.values.copy_(torch.tensor([0.0, 4.0, 8.0, -4.0]).view(4, 1, 1, 1))
    out = grid(torch.arange(14)).flatten()
    assert out[:9].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert out[9].item() == 5  # a quarter of the way from 8 to -4
    assert torch.equal(out[10:], out[9].expand(4))  # past the end: the last frame
    with torch.no_grad():
        grid.values.add_(0.4)
    assert grid(torch.tensor([0, 4])).flatten().tolist() == [0, 4]  # reads rounded values


def test_scene_cells_never_mix_two_scenes():
    """Scenes start at 0, 5 and 6 (a one-frame scene) of 12 frames: each scene has its own run of
    cells, a frame reads only its scene's cells, and within a scene it interpolates as a grid of
    that scene's length would."""
    scenes = (0, 5, 6)
    grid = LatentGrid(12, 4, 1, 1, 1, scenes)
    assert grid.cells == latent_cells(5, 4) + latent_cells(1, 4) + latent_cells(6, 4) == 6
    assert latent_cells(12, 4, scenes) == grid.cells
    assert grid.cell_frames().tolist() == [0, 4, 5, 6, 10, 11]
    with torch.no_grad():  # cells of scene k hold 100 k + the frame they sit on in the scene
        grid.values.copy_(torch.tensor([0.0, 4, 100, 200, 204, 208]).view(6, 1, 1, 1))
    out = grid(torch.arange(13)).flatten().tolist()
    assert out[:5] == [0, 1, 2, 3, 4]
    assert out[5] == 100
    assert out[6:12] == [200, 201, 202, 203, 204, 205]
    assert out[12] == 205  # past the end: the last frame
    per_frame = LatentGrid(12, 1, 1, 1, 1, scenes)  # a cell per frame, whatever the scenes
    assert per_frame.cells == 12 and per_frame.cell_frames().tolist() == list(range(12))


def test_one_scene_reads_exactly_as_a_grid_without_scenes():
    """Sessions of files before scenes existed decode to the same bits."""
    plain, one = LatentGrid(11, 4, 2, 3, 3), LatentGrid(11, 4, 2, 3, 3, (0,))
    with torch.no_grad():
        plain.values.copy_(torch.randint(-9, 10, plain.values.shape).float())
        one.values.copy_(plain.values)
    frames = torch.arange(13)
    manual = []
    for k in frames.clamp(max=10).tolist():
        low = min(k // 4, plain.cells - 2)
        frac = torch.tensor((k - low * 4) / 4, dtype=torch.float32)
        manual.append(plain.values[low] * (1 - frac) + plain.values[low + 1] * frac)
    assert torch.equal(one(frames), plain(frames))
    assert torch.equal(plain(frames), torch.stack(manual))


def test_a_one_cell_grid_gives_its_cell_to_every_frame():
    grid = LatentGrid(1, 4, 2, 2, 2)  # a one-frame session
    assert grid.cells == 1
    with torch.no_grad():
        grid.values.copy_(torch.randint(-9, 10, grid.values.shape).float())
    assert torch.equal(grid(torch.arange(5)), grid.values[0].expand(5, -1, -1, -1))


def test_a_latent_session_sees_only_its_own_latents():
    config = PRESETS["tiny"].model_config(30, 44)
    model = PFNR(config)
    for mw in model.masked_weights().values():
        mw.reset_session(torch.Generator().manual_seed(0))
    first, second = model.new_head(6), model.new_head(6)
    with torch.no_grad():
        for grid in first.grids().values():
            grid.values.copy_(torch.randint(-3, 4, grid.values.shape))
        second.load_state_dict(first.state_dict())
        before = model(torch.arange(6), first)
        second.latents[0].values.add_(1)
        assert torch.equal(model(torch.arange(6), first), before)
        assert not torch.equal(model(torch.arange(6), second), before)
