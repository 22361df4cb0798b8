"""Training against the coded size: learned quantization steps and a differentiable bit count.

What a session stores is integers: the codes of the weights it newly claims (code x step, one step
per quantization group) and, in the latent family, its latent grids. Both are entropy-coded with a
histogram per stream, and the cost of a value under such a model is about -log2 of its probability.
`RateModel` makes that trainable:

- every shared tensor gets a learned log step per quantization group, started from the max rule of
  `quant.quantize` at the session's bits; once the session's mask is fixed, training runs through
  `step x round(w / step)` (straight-through), so the rounding is learned, and the step itself trades
  distortion against bits;
- the bits of the rounded values are estimated under a zero-mean discretised Laplace per weight
  tensor and per latent channel (one histogram each in the file), its scale fitted to the values at
  every step (`fitted_log_scale`, the maximum-likelihood one). The values are rounded for the
  estimate as for the forward pass (straight-through): the network and the rate term see the same
  integers. Learned scales lagged behind the values (tiny preset, 30 epochs: weights estimated at
  17.8 kB, stored in 7.4 kB), which misled the size shown while training.

Nothing here is stored: the archive keeps the codes and the steps (as `quant` scales), and the
coder's own histograms. The steps are float32 in the file, and decoding multiplies code x step once,
as for any other scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .entropy import latent_context_splits
from .model import PFNR, Head, MaskedWeight
from .quant import max_code

MIN_LAPLACE_SCALE = 0.05  # in units of one quantization step
MIN_PROBABILITY = 2.0**-16  # the coder's precision: nothing costs more than 16 bits
MAX_BITS = -math.log2(MIN_PROBABILITY)


class _LaplaceBits(torch.autograd.Function):
    """The sum of `laplace_bits` in a few passes over the values, with its gradient written out.

    The values are rounded (straight-through), so every magnitude x is an integer: zero costs the
    centre interval's mass, -log2(1 - exp(-1/(2b))), and x >= 1 costs the tail's,
    (x - 1/2) / (b ln 2) - log2((1 - exp(-1/b)) / 2), each capped at the coder's 16 bits. The
    gradient is sign(x) / (b ln 2) where a value costs the tail's bits below the cap, else 0 (what
    autograd gives through the closed form). Written out when it was the rate term's estimate:
    autograd's two dozen elementwise passes made bikes' epochs about 19% slower (6 epochs, cpu
    preset, A/B on one machine). The rate term now uses `_FittedLaplaceBits`, which shares its
    helpers and falls back to them where a value reaches the cap."""

    @staticmethod
    def forward(ctx, values: Tensor, log_scale: Tensor) -> Tensor:  # noqa: ANN001
        rounded = torch.round(values)
        terms = _laplace_terms(log_scale)
        bits, paying = _bits_by_value(rounded, *terms)
        ctx.save_for_backward(rounded, paying, terms[0])
        return bits

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        rounded, paying, slope = ctx.saved_tensors
        return _laplace_gradient(rounded, paying, slope, grad), None


def _laplace_terms(log_scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(bits per step of magnitude in the tail, the tail's offset, a zero's bits) at a scale."""
    b = (2.0**log_scale).clamp(min=MIN_LAPLACE_SCALE)
    slope = 1 / (b * math.log(2))
    tail_offset = -torch.log2(0.5 * (1 - torch.exp(-1 / b))) - 0.5 * slope
    # at most MAX_BITS: its probability is floored at MIN_PROBABILITY
    zero_bits = -torch.log2((1 - torch.exp(-0.5 / b)).clamp(min=MIN_PROBABILITY))
    return slope, tail_offset, zero_bits


def _bits_by_value(
    rounded: Tensor, slope: Tensor, tail_offset: Tensor, zero_bits: Tensor
) -> tuple[Tensor, Tensor]:
    """Summed bits of integer values, each capped at MAX_BITS, and where the gradient is not 0."""
    tail = torch.addcmul(tail_offset, rounded.abs(), slope)
    nonzero = rounded != 0
    paying = nonzero & (tail <= MAX_BITS)
    return torch.where(nonzero, tail.clamp(max=MAX_BITS), zero_bits).sum(), paying


def _laplace_gradient(
    rounded: Tensor, paying: Tensor | None, slope: Tensor, grad: Tensor
) -> Tensor:
    """sign(x) / (b ln 2) where a value pays the tail's bits below the cap (None: every non-zero
    value does), else 0."""
    if paying is None:
        return torch.sign(rounded) * slope * grad
    return torch.where(paying, torch.sign(rounded) * slope * grad, 0.0)


def laplace_bits(values: Tensor, log_scale: Tensor) -> Tensor:
    """Bits of `values` (in steps), rounded with a straight-through gradient, under a zero-mean
    Laplace of scale 2**log_scale (broadcast over the values), each integer standing for the unit
    interval around it.

    In closed form: outside (-1/2, 1/2) the mass of [x - 1/2, x + 1/2] is
    exp(-(|x| - 1/2) / b) (1 - exp(-1/b)) / 2, inside it is 1 - exp(-1/(2b)) cosh(x / b).
    """
    return _LaplaceBits.apply(values, log_scale.to(values.dtype))


_SCALE_CANDIDATES = torch.linspace(-5.0, 10.0, 121)  # log2 of the Laplace scales tried


def fitted_log_scale(values: Tensor, dims: tuple[int, ...] = (-1,)) -> Tensor:
    """log2 of the discretised-Laplace scale under which the rounded `values` cost the fewest
    bits, one per histogram the file will hold: `dims` are the axes a histogram runs over (the
    last by default: one row each), kept as size 1 so the result broadcasts; no gradient. The cost
    depends on three sums per histogram only (zeros, non-zeros, and their magnitudes past one
    half), so trying many scales is cheap."""
    with torch.no_grad():
        return _LaplaceFit(torch.round(values).abs(), dims).log_scale


class _LaplaceFit:
    """What a histogram's bits depend on, from the rounded magnitudes in one pass each: its count,
    zeros and summed magnitude (float64, exact for integers), and the best scale for them."""

    def __init__(self, magnitude: Tensor, dims: tuple[int, ...]) -> None:
        self.count = math.prod(magnitude.shape[d] for d in dims)
        self.zeros = (magnitude == 0).sum(dims, keepdim=True).double()
        self.total = magnitude.double().sum(dims, keepdim=True)
        # Each non-zero integer m lies m - 1/2 past the centre interval.
        excess = self.total - 0.5 * (self.count - self.zeros)
        zeros, excess = self.zeros.reshape(-1, 1), excess.reshape(-1, 1)
        others = self.count - zeros
        b = (2.0 ** _SCALE_CANDIDATES.to(zeros)).clamp(min=MIN_LAPLACE_SCALE)[None, :]
        floor = torch.tensor(MIN_PROBABILITY, dtype=torch.float64, device=zeros.device)
        zero_bits = -torch.log2(torch.maximum(1 - torch.exp(-0.5 / b), floor))
        other_bits = -torch.log2(0.5 * (1 - torch.exp(-1 / b)))
        cost = zeros * zero_bits + others * other_bits + excess / (b * math.log(2))
        best = _SCALE_CANDIDATES.to(magnitude.device)[torch.argmin(cost, dim=1)]
        self.log_scale = best.to(magnitude.dtype).reshape(self.zeros.shape)


class _FittedLaplaceBits(torch.autograd.Function):
    """`laplace_bits(values, fitted_log_scale(values, dims))` from the fit's own sums.

    Below the 16-bit cap a histogram's bits are zeros x zero_bits + (non-zeros) x tail_offset +
    slope x (summed magnitude): no pass over the values beyond the fit's. Only a histogram whose
    largest magnitude reaches the cap is summed value by value. The gradient is the same tensor
    `_LaplaceBits` gives. The rate term runs over every latent of a session at every step, so its
    cost grows with the clip: this keeps it to a handful of passes."""

    @staticmethod
    def forward(ctx, values: Tensor, dims: tuple[int, ...]) -> Tensor:  # noqa: ANN001
        rounded = torch.round(values)
        if rounded.numel() == 0:
            ctx.save_for_backward(rounded, None, rounded.new_zeros(()))
            return rounded.sum()
        magnitude = rounded.abs()
        fit = _LaplaceFit(magnitude, dims)
        slope, tail_offset, zero_bits = _laplace_terms(fit.log_scale)
        capped = tail_offset + magnitude.amax(dims, keepdim=True) * slope > MAX_BITS
        if bool(capped.any()):
            bits, paying = _bits_by_value(rounded, slope, tail_offset, zero_bits)
            ctx.save_for_backward(rounded, paying, slope)
            return bits
        others = fit.count - fit.zeros
        bits = fit.zeros * zero_bits.double() + others * tail_offset.double()
        bits = bits + slope.double() * fit.total
        ctx.save_for_backward(rounded, None, slope)
        return bits.sum().to(values.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        rounded, paying, slope = ctx.saved_tensors
        return _laplace_gradient(rounded, paying, slope, grad), None


def fitted_laplace_bits(values: Tensor, dims: tuple[int, ...] = (-1,)) -> Tensor:
    """Bits of `values` under the discretised Laplace fitted to them (`fitted_log_scale` over
    `dims`), rounded with a straight-through gradient: what the rate term counts."""
    return _FittedLaplaceBits.apply(values, dims)


def _per_group(mw: MaskedWeight, per_group: Tensor) -> Tensor:
    """A per-group vector shaped to broadcast over the weight (groups run along one axis)."""
    along = per_group.repeat_interleave(mw.channel_block)[: mw.shape[mw.channel_axis]]
    view = [1] * len(mw.shape)
    view[mw.channel_axis] = -1
    return along.view(view)


class RateModel(nn.Module):
    """Learned steps and bit estimates for one session's new weights and latents."""

    def __init__(self, model: PFNR, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.started = False  # steps hold learned values only after `start_steps`
        self._new: dict[str, Tensor | None] | None = None  # new positions, once masks are fixed
        device = self.device = next(model.buffers()).device
        layers = model.masked_weights()
        self.names = list(layers)
        self.log_step = nn.ParameterList(
            nn.Parameter(torch.zeros(mw.n_groups, device=device)) for mw in layers.values()
        )

    def start_steps(self, model: PFNR, masks: dict[str, Tensor]) -> None:
        """Steps from the max rule over the values each tensor newly claims (as `quantize` does)."""
        levels = max_code(self.bits)
        self.started = True
        with torch.no_grad():
            for log_step, (name, mw) in zip(
                self.log_step, model.masked_weights().items(), strict=True
            ):
                new = (masks[name] & ~mw.used).expand(mw.shape)
                magnitude = torch.where(new, mw.weight.abs(), torch.zeros((), device=new.device))
                peak = torch.zeros(mw.n_groups, device=new.device)
                peak = peak.scatter_reduce(
                    0, mw.groups().to(new.device).flatten(), magnitude.flatten(), "amax"
                )
                log_step.copy_(torch.log(peak.clamp(min=1e-8) / levels))

    def steps(self, name: str) -> Tensor:
        """float32 step per quantization group of tensor `name`, as the archive will store it."""
        return self.log_step[self.names.index(name)].detach().exp().float()

    def quantized_weights(self, model: PFNR, masks: dict[str, Tensor]):  # noqa: ANN201
        """Callable giving the effective weights: frozen values where used, new values as
        step x round(w / step) (straight-through), all under the fixed masks."""
        layers = model.masked_weights()
        levels = max_code(self.bits)
        plan = {
            name: ((masks[name] & ~mw.used).expand(mw.shape), i)
            for i, (name, mw) in enumerate(layers.items())
        }

        def weights() -> dict[str, Tensor]:
            out = {}
            for name, mw in layers.items():
                new, i = plan[name]
                step = _per_group(mw, self.log_step[i].exp())
                scaled = mw.weight / step
                rounded = scaled + (torch.round(scaled).clamp(-levels, levels) - scaled).detach()
                values = torch.where(
                    new, rounded * step, torch.where(mw.used, mw.frozen, mw.weight)
                )
                out[name] = values * masks[name]
            return out

        return weights

    def _new_codes(self, model: PFNR, masks: dict[str, Tensor]) -> Iterator[Tensor]:
        """For each tensor that claims weights: its new weights in steps, clipped as
        `quantize_with_scales` clips them, as one row (row-major, the order the file codes)."""
        if self._new is None:  # the masks are fixed from here on: where the new weights are
            self._new = {}
            for name, mw in model.masked_weights().items():
                new = (masks[name] & ~mw.used).expand(mw.shape).flatten()
                self._new[name] = None if bool(new.all()) else torch.nonzero(new).flatten()
        levels = max_code(self.bits)
        for i, (name, mw) in enumerate(model.masked_weights().items()):
            index = self._new[name]
            if index is not None and index.numel() == 0:
                continue
            scaled = (mw.weight / _per_group(mw, self.log_step[i].exp())).flatten()
            if index is not None:
                scaled = scaled[index]
            yield scaled.clamp(-levels, levels)[None, :]

    def weight_bits(self, model: PFNR, masks: dict[str, Tensor]) -> Tensor:
        """Estimated bits of the codes of every newly claimed weight."""
        parts = [fitted_laplace_bits(c) for c in self._new_codes(model, masks)]
        return _total(parts, self.device)

    @torch.no_grad()
    def coded_bits(self, model: PFNR, masks: dict[str, Tensor], head: Head) -> float:
        """Bits the weight codes and latents would take in the file now (their empirical
        entropies under the learned steps): the size shown while training."""
        total = sum(empirical_bits(codes) for codes in self._new_codes(model, masks))
        for grid in head.grids().values():
            values = torch.round(grid.values.detach()).cpu().numpy().astype(np.int64)
            width = values.shape[-1]
            total += sum(
                latent_channel_bits(values[:, c].reshape(values.shape[0], -1), width)
                for c in range(values.shape[1])
            )
        return total

    def latent_bits(self, head: Head) -> Tensor:
        """Estimated bits of every latent value of the session, channel by channel."""
        parts = []
        for grid in head.grids().values():  # values (cells, C, h, w): a histogram per channel
            parts.append(fitted_laplace_bits(grid.values, (0, 2, 3)))
        return _total(parts, self.device)


def empirical_bits(values: Tensor) -> float:
    """Bits of the rounded `values` (one row per histogram) coded with their own histograms: what
    the archive's coder pays for them, side information aside."""
    total = 0.0
    for row in torch.round(values.detach()).reshape(-1, values.shape[-1]):
        counts = torch.unique(row, return_counts=True)[1].double()
        total += float(-(counts * torch.log2(counts / counts.sum())).sum())
    return total


def _split_bits(values: np.ndarray, classes: np.ndarray) -> float:
    """Bits of `values` coded with one histogram per context class (sum of n H over classes)."""
    if values.size == 0:
        return 0.0
    offset = values.ravel() - values.min()
    span = int(offset.max()) + 1
    counts = np.bincount(classes.ravel() * span + offset).astype(np.float64)
    counts = np.pad(counts, (0, -counts.size % span)).reshape(-1, span)
    totals = counts.sum(axis=1, keepdims=True)
    used = counts > 0
    return float(-(counts[used] * np.log2((counts / np.maximum(totals, 1))[used])).sum())


def latent_channel_bits(values: np.ndarray, width: int | None = None) -> float:
    """Bits of one latent channel (cells, positions) as `entropy.encode_latents` codes it: the
    fewest of its plain entropy and its entropies split by each context the encoder tries."""
    best = _split_bits(values, np.zeros(values.shape, dtype=np.int64))
    for _, _, classes in latent_context_splits(values, width):
        best = min(best, _split_bits(values, classes))
    return best


def _total(parts: list[Tensor], device: torch.device) -> Tensor:
    return torch.stack(parts).sum() if parts else torch.zeros((), device=device)


def rate_weight(pixels: int, rate_lambda: float) -> float:
    """Factor turning estimated bits into the loss's rate term: lambda x bits per pixel."""
    return rate_lambda / max(1, pixels) if math.isfinite(rate_lambda) else 0.0
