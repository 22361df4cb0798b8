"""Training against the coded size: the bit estimate, learned steps, and exact latent streams."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from pfnr_codec.bitstream import pack_session, unpack_session
from pfnr_codec.config import PRESETS
from pfnr_codec.container import FORMAT_VERSION
from pfnr_codec.entropy import encode_ints, get_coder
from pfnr_codec.errors import ConfigError
from pfnr_codec.model import PFNR
from pfnr_codec.quant import dequantize, quantize_with_scales
from pfnr_codec.rate import fitted_laplace_bits, fitted_log_scale, laplace_bits
from pfnr_codec.render import render_frames, session_weights
from pfnr_codec.train import TrainSettings, fit_session

from synthetic import synthetic_tensor

CODER = get_coder("constriction")
CONFIG = PRESETS["tiny"].model_config(30, 44)


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("off_integers", [False, True])
def test_the_bit_estimate_is_close_to_what_the_coder_writes(scale, off_integers):
    """Laplace values: the estimate under the fitted scale is within 5% (plus a few bytes of side
    information) of the ints stream the archive would hold, also when the trained values sit
    anywhere between the integers they round to (the noise proxy overstated those: +17% at 0.3
    steps of spread)."""
    torch.manual_seed(0)
    values = torch.distributions.Laplace(0.0, scale).sample((20_000,))
    rounded = torch.round(values)
    shown = rounded + (torch.rand_like(values) - 0.5) * 0.99 if off_integers else rounded
    estimate = float(laplace_bits(shown, torch.tensor(math.log2(scale))))
    coded = 8 * len(encode_ints(rounded.numpy().astype(np.int32), CODER))
    assert abs(coded - estimate) < 0.05 * estimate + 8 * 64, (coded, estimate)


def test_the_fitted_scale_is_the_cheapest_and_tracks_each_row():
    """Each row (one histogram in the file) gets its own maximum-likelihood scale: near the
    scale it was drawn from, and no other scale codes it in fewer bits."""
    torch.manual_seed(1)
    rows = torch.stack(
        [torch.distributions.Laplace(0.0, b).sample((5_000,)) for b in (0.3, 2.0, 30.0)]
    )
    fitted = fitted_log_scale(rows)
    assert fitted.shape == (3, 1) and not fitted.requires_grad
    assert torch.allclose(fitted[1:, 0], torch.log2(torch.tensor([2.0, 30.0])), atol=0.2)
    for row, log_scale in zip(rows, fitted, strict=True):
        best = float(laplace_bits(row, log_scale))
        for other in (log_scale - 0.5, log_scale + 0.5):
            assert best <= float(laplace_bits(row, other))


def _closed_form_bits(values: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """laplace_bits as autograd would run it from its docstring's closed form."""
    x = (values + (torch.round(values) - values).detach()).abs()
    b = (2.0**log_scale).clamp(min=0.05)
    tail = (x - 0.5) / (b * math.log(2)) - torch.log2(0.5 * (1 - torch.exp(-1 / b)))
    centre = -torch.log2(
        (1 - torch.exp(-0.5 / b) * torch.cosh(x.clamp(max=0.5) / b)).clamp(min=2.0**-16)
    )
    return torch.where(x >= 0.5, tail, centre).clamp(max=16).sum()


@pytest.mark.parametrize("log_scale", [-6.0, -2.0, 0.0, 3.0])
def test_the_written_out_estimate_and_gradient_equal_the_closed_form(log_scale):
    """Values past the 16-bit cap included (tiny scales): same bits, same gradient, per row."""
    torch.manual_seed(2)
    values = (
        torch.randn(3, 4, 50) * torch.tensor([0.4, 3.0, 40.0])[:, None, None]
    ).requires_grad_()
    scale = torch.tensor([log_scale, log_scale + 1, log_scale - 1])[:, None, None]
    bits = laplace_bits(values, scale)
    (grad,) = torch.autograd.grad(bits, values)
    expected = _closed_form_bits(values, scale)
    (expected_grad,) = torch.autograd.grad(expected, values)
    assert torch.allclose(bits, expected, rtol=1e-5)
    assert torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    assert bool((grad == 0).any()) and bool((grad != 0).any())


@pytest.mark.parametrize("past_cap", [False, True])
def test_bits_from_the_fit_s_sums_equal_the_value_by_value_estimate(past_cap):
    """The rate term's one-pass estimate: the same bits and bit for bit the same gradient as
    laplace_bits under the fitted scale, per latent channel and per row, with a value past the
    16-bit cap or without."""
    torch.manual_seed(4)
    grid = torch.randn(9, 3, 5, 7) * torch.tensor([0.3, 2.0, 30.0])[None, :, None, None]
    rows = torch.randn(2, 400) * 4
    if past_cap:
        grid[0, 0, 0, 0], rows[1, 0] = 5e4, -5e4
    for values, dims in ((grid, (0, 2, 3)), (rows, (-1,))):
        one = values.clone().requires_grad_()
        two = values.clone().requires_grad_()
        fused = fitted_laplace_bits(one, dims)
        reference = laplace_bits(two, fitted_log_scale(two, dims))
        fused.backward(torch.tensor(0.7))
        reference.backward(torch.tensor(0.7))
        assert torch.allclose(fused.detach(), reference.detach(), rtol=1e-6)
        assert torch.equal(one.grad, two.grad)
        assert bool((one.grad != 0).any())


def test_a_scale_per_channel_fits_as_rows_of_that_channel_would():
    torch.manual_seed(3)
    grid = torch.distributions.Laplace(0.0, torch.tensor([0.5, 4.0, 60.0])).sample((7, 5, 6))
    grid = grid.permute(0, 3, 1, 2)  # (cells, channels, h, w)
    per_channel = fitted_log_scale(grid, (0, 2, 3))
    rows = fitted_log_scale(grid.transpose(0, 1).flatten(1))
    assert per_channel.shape == (1, 3, 1, 1) and torch.equal(per_channel.flatten(), rows.flatten())


def test_the_bit_estimate_falls_as_values_shrink_and_has_a_gradient():
    values = torch.linspace(-6, 6, 101, requires_grad=True)
    bits = laplace_bits(values, torch.tensor(0.0))
    bits.backward()
    assert float(laplace_bits(values.detach() * 0.5, torch.tensor(0.0))) < float(bits.detach())
    # Moving a value toward zero saves bits: the gradient points away from zero.
    assert float(values.grad[-1]) > 0 and float(values.grad[0]) < 0


def test_learned_scales_quantize_within_half_a_step_and_clip_to_the_bits():
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, 500).astype(np.float32)
    groups = rng.integers(0, 3, 500)
    scales = np.array([0.1, 0.25, 0.02], dtype=np.float32)
    codes, stored = quantize_with_scales(values, groups, scales, 6)
    assert np.abs(codes).max() <= 31
    recon = dequantize(codes, groups, stored)
    inside = np.abs(values) <= 31 * scales[groups]
    assert np.all(np.abs(recon - values)[inside] <= scales[groups][inside] / 2 * (1 + 1e-6))
    with pytest.raises(ConfigError):
        quantize_with_scales(values, groups, np.array([0.1, 0.0, 1.0], np.float32), 6)


@pytest.mark.parametrize("version", [(1, 1), FORMAT_VERSION], ids=["v1.1", "current"])
def test_a_latent_session_round_trips_through_its_streams_exactly(version):
    """Packed and unpacked into a fresh network, a session's latents, head and weights are the
    ones it was trained with: it renders the same bytes from the file as from memory."""
    model = PFNR(CONFIG)
    clip = synthetic_tensor(9, CONFIG.height, CONFIG.width, seed=31)
    fit = fit_session(model, clip, TrainSettings(epochs=4, capacity=1.0), session_seed=1)
    weights = session_weights(model, {n: t.mask for n, t in fit.tensors.items()})
    in_memory = render_frames(model, weights, fit.head)
    streams = pack_session(fit, CODER, version)
    assert any(name.startswith("latent/fine/") for name in streams)
    fresh = PFNR(CONFIG)
    masks, head = unpack_session(streams, fresh, CODER, 9, version)
    for name, grid in fit.head.grids().items():
        assert torch.equal(head.grids()[name].values, grid.values), name
        assert torch.equal(grid.values, torch.round(grid.values))  # integers, as stored
    from_file = render_frames(fresh, session_weights(fresh, masks), head)
    assert from_file.tobytes() == in_memory.tobytes()


def test_the_size_shown_while_training_is_near_the_stored_size():
    """Progress carries the session's size as it would be stored now (the codes' and latents'
    own histograms, plus scales, head and metadata) once weights train quantized; at the end it
    lies within 15% of the streams the session stores plus its metadata."""
    torch.manual_seed(0)
    model = PFNR(CONFIG)
    clip = synthetic_tensor(8, CONFIG.height, CONFIG.width, seed=7)
    settings = TrainSettings(**{**PRESETS["tiny"].train, "epochs": 12})
    fit = fit_session(model, clip, settings, session_seed=1)
    assert fit.history[0].estimated_bytes is None  # weights are not quantized yet
    estimate = fit.history[-1].estimated_bytes
    streams = pack_session(fit, CODER, FORMAT_VERSION)
    stored = sum(len(data) for data in streams.values()) + 1500  # + metadata
    assert estimate is not None and abs(estimate - stored) < 0.15 * stored, (estimate, stored)


def test_latents_coded_by_their_neighbours_only_in_files_that_define_it():
    """Rows of one value each (the left neighbour predicts the rest of a row, the cell before
    predicts nothing): a 1.4 file codes them in SPATIAL mode, a 1.3 file cannot, and both give
    the same integers back."""
    config = replace(CONFIG, base_height=12, base_width=20)  # maps big enough to repay tables
    model = PFNR(config)
    clip = synthetic_tensor(9, config.height, config.width, seed=32)
    fit = fit_session(model, clip, TrainSettings(epochs=1, capacity=1.0), session_seed=1)
    fine = fit.head.grids()["latent/fine"].values
    cells, channels, height, _ = fine.shape
    rows = torch.randint(
        -1, 2, (cells, channels, height, 1), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        fine.copy_(rows.expand_as(fine).float())
    for version, spatial in (((1, 3), False), ((1, 4), True)):
        streams = pack_session(fit, CODER, version)
        modes = {streams[f"latent/fine/{c}"][0] for c in range(channels)}
        assert (2 in modes) == spatial, (version, modes)
        _, head = unpack_session(streams, PFNR(config), CODER, 9, version)
        assert torch.equal(head.grids()["latent/fine"].values, fine)
