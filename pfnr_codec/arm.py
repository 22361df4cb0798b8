"""A learned context model for latent channels (format 1.6): each value's distribution predicted
from the values decoded before it by a small integer network the session stores.

Latents are 70% of a bikes session, and the context split of `entropy.encode_latents` sees at most
two neighbours through a few classes. Here a two-layer network (Cool-chic's ARM, in integers) reads
six causal neighbours in the value's own map and the values of the grid's earlier channels at its
position, and predicts a discretised Laplace (mean in 1/8 steps, scale in 1/6 steps of ln b) per
value; the encoder fits it to the session's latents after training, so training is unchanged.

Exact decoding on every machine: the network's weights are integers in the file and inference is
integer arithmetic (products, sums, floor shifts, clips) in int64, bounded so nothing overflows;
the frequency tables come from the integer decay factors of `DECAY` by integer multiplication
alone. A channel decodes anti-diagonal by anti-diagonal (2y + x: every neighbour read lies on an
earlier one) across all cells at once, and channel by channel, so a decoder runs a few hundred
small integer batches per channel, not one network per value.

Layouts in docs/FORMAT.md ("latents stream", mode 3, and "latent context model").
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .byteio import Reader, unzigzag, uvarint, zigzag
from .coders import DEFAULT_CODER, TOTAL_FREQ, EntropyCoder, get_coder
from .entropy import decode_ints, encode_ints
from .errors import ArchiveError

# Two coding orders. SPATIAL: a channel by anti-diagonals 2y + x, every cell at once; a value
# sees these neighbours (dy, dx) in its own map, all on earlier diagonals. TEMPORAL: a channel cell
# by cell, every position at once; a value sees the 3 x 3 around its position in the cell before.
# Either way it also sees the grid's earlier channels at its own position. Maps larger than the
# grid's cell count gain most from their neighbours (bikes' fine grid: 13% off SPATIAL, none
# TEMPORAL), per-frame maps from the cell before (its 1-step grid: 20% off TEMPORAL, 14% SPATIAL,
# in a float probe).
SPATIAL, TEMPORAL = 0, 1
SPATIAL_NEIGHBOURS = ((0, -1), (0, -2), (-1, -1), (-1, 0), (-1, 1), (-2, 0))
TEMPORAL_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
_PAD_TOP, _PAD_BOTTOM, _PAD_SIDE = 2, 1, 2

LATENT_ARM_MODE = 3  # the latents-stream mode byte of a channel coded with the grid's model
ARM_CODER = (
    "constriction"  # mode-3 payloads are constriction ANS words, whatever the archive's coder
)

FEATURE_CLIP = 127  # context values are clipped to +-127 before the network sees them
ACT_BITS = 8  # hidden activations carry 8 fractional bits
ACT_MAX = (1 << 20) - 1  # and are clipped to 0..2^20 - 1
MEAN_UNIT = 8  # means in 1/8 of a step
SCALE_BINS, SCALE_ZERO, SCALE_PER_UNIT = 32, 14, 6  # bin j <-> ln b = (j - 14) / 6
MAX_HIDDEN = 64
WEIGHT_SHIFTS = (8, 24)  # fixed-point fraction bits of the weights a file may use
MAX_PARAM = 1 << 30  # stored integers beyond +-2^30 are refused (int64 stays exact)
MAX_ALPHABET = 64  # grids whose values span more keep the context split

# exp(-1 / (8 b_j)) in Q30 for b_j = exp((j - 14) / 6), j = 0..31: the ratio between the weights of
# two values 1/8 step apart. Literal integers, so no machine's exp enters the tables.
DECAY = (
    295855910, 360597567, 426355219, 491306043, 553960621, 613201581, 668272732, 718737385,
    764421723, 805354757, 841712161, 873767830, 901854596, 926333950, 947573834, 965933164,
    981751720, 995344120, 1006996804, 1016967138, 1025483952, 1032748998, 1038938935, 1044207589,
    1048688284, 1052496132, 1055730210, 1058475562, 1060805032, 1062780891, 1064456296, 1065876559,
)  # fmt: skip

FIT_HIDDEN = 16  # 24 codes 0.4% shorter on bikes but stores 0.7 KB more per grid
FIT_STEPS = 800  # 400 codes bikes' latents 1% longer
FIT_BATCH = 16384
FIT_SHIFTS = (8, 10)  # the weight precisions an encoder tries
# A model takes 0.4-1 KB and saves 10-15% of a grid (bikes): smaller grids are not worth fitting.
MIN_GRID_BYTES = 4096
# Fitting and coding hold every value's features at once (about 200 bytes a value): larger grids
# keep the context split.
MAX_FIT_VALUES = 1 << 22


def feature_count(order: int, channels: int) -> int:
    """Inputs of the network of a grid of `channels` channels: the neighbours its order reads,
    the channels before (at most channels - 1) and a one-hot channel index."""
    neighbours = SPATIAL_NEIGHBOURS if order == SPATIAL else TEMPORAL_NEIGHBOURS
    return len(neighbours) + 2 * channels - 1


def param_count(order: int, channels: int, hidden: int) -> int:
    inputs = feature_count(order, channels)
    return hidden * inputs + hidden + hidden * hidden + hidden + 2 * hidden + 2


def exact_product(x: np.ndarray, w: np.ndarray, x_max: int) -> np.ndarray:
    """x @ w.T for int64 `x` (|x| <= x_max) and int64 `w`, exactly. When no partial sum can
    reach 2^53, every product and sum is an integer float64 holds exactly, in any order, so BLAS
    gives the int64 result (1.7-4.6x faster than numpy's int64 product, which has no BLAS, on
    the group sizes decoding runs; `predict` was about half of a bikes session's model decoding);
    otherwise int64 arithmetic. Fitted models are far below the bound."""
    if int(np.abs(w).sum(axis=1).max(initial=0)) * x_max < 1 << 53:
        return (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    return x @ w.T


@dataclass(frozen=True)
class ContextModel:
    """The integer network of one grid, and the value range its tables cover."""

    order: int  # SPATIAL or TEMPORAL
    hidden: int
    shift: int  # weights are integers x 2^-shift
    low: int  # smallest value of the grid; symbols are value - low
    alphabet: int  # values low .. low + alphabet - 1
    params: np.ndarray  # int64: w1 (H, F), b1, w2 (H, H), b2, w3 (2, H), b3, row-major

    def layers(self, channels: int) -> list[tuple[np.ndarray, np.ndarray]]:
        inputs, hidden = feature_count(self.order, channels), self.hidden
        shapes = [(hidden, inputs), (hidden, hidden), (2, hidden)]
        out, at = [], 0
        for rows, cols in shapes:
            w = self.params[at : at + rows * cols].reshape(rows, cols)
            at += rows * cols
            out.append((w, self.params[at : at + rows]))
            at += rows
        return out

    def predict(self, features: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale bin, mean index into the tables) of every row of `features` (n, F) int64."""
        (w1, b1), (w2, b2), (w3, b3) = self.layers(channels)
        h = (exact_product(features, w1, FEATURE_CLIP) + b1) >> (self.shift - ACT_BITS)
        h = np.clip(h, 0, ACT_MAX)
        h = np.clip((exact_product(h, w2, ACT_MAX) + b2) >> self.shift, 0, ACT_MAX)
        out = exact_product(h, w3, ACT_MAX) + b3  # 2^(shift + ACT_BITS) per unit
        unit = self.shift + ACT_BITS
        mean = (out[:, 0] >> (unit - 3)) - MEAN_UNIT * self.low  # 1/8 steps above `low`
        mean = np.clip(mean, 0, MEAN_UNIT * (self.alphabet - 1))
        scale = ((out[:, 1] * SCALE_PER_UNIT + (1 << (unit - 1))) >> unit) + SCALE_ZERO
        return np.clip(scale, 0, SCALE_BINS - 1), mean

    def to_bytes(self, coder: EntropyCoder) -> bytes:
        head = bytes([self.order, self.hidden, self.shift]) + uvarint(zigzag(self.low))
        return head + bytes([self.alphabet]) + encode_ints(self.params, coder)

    @classmethod
    def from_bytes(cls, data: bytes, channels: int, coder: EntropyCoder) -> ContextModel:
        reader = Reader(data, "latent context model")
        order, hidden, shift = reader.u8(), reader.u8(), reader.u8()
        if order not in (SPATIAL, TEMPORAL):
            raise reader.fail(f"coding order must be 0 or 1, found {order}")
        if not 1 <= hidden <= MAX_HIDDEN:
            raise reader.fail(f"hidden width must be 1..{MAX_HIDDEN}, found {hidden}")
        if not WEIGHT_SHIFTS[0] <= shift <= WEIGHT_SHIFTS[1]:
            raise reader.fail(f"weight shift must be {WEIGHT_SHIFTS[0]}..{WEIGHT_SHIFTS[1]}")
        low = unzigzag(reader.uvarint(MAX_PARAM))
        alphabet = reader.u8()
        if not 2 <= alphabet <= MAX_ALPHABET:
            raise reader.fail(f"alphabet must be 2..{MAX_ALPHABET} values, found {alphabet}")
        count = param_count(order, channels, hidden)
        params = decode_ints(reader.rest(), count, coder).astype(np.int64)
        if params.size and np.abs(params).max() >= MAX_PARAM:
            raise reader.fail(f"a network parameter exceeds +-{MAX_PARAM}")
        return cls(order, hidden, shift, low, alphabet, params)


# ---------------------------------------------------------------------------- tables


@functools.lru_cache(maxsize=8)
def frequency_tables(alphabet: int) -> np.ndarray:
    """int64 (SCALE_BINS, 8 (alphabet - 1) + 1, alphabet): row [j, m] gives symbol s the weight
    decay_j^|8 s - m| (Q30, by integer multiplication), normalised to TOTAL_FREQ with at least 1
    per symbol; the remainder goes to the first heaviest symbol."""
    means = MEAN_UNIT * (alphabet - 1) + 1
    distance = np.abs(MEAN_UNIT * np.arange(alphabet)[None, :] - np.arange(means)[:, None])
    tables = np.empty((SCALE_BINS, means, alphabet), dtype=np.int64)
    for j, decay in enumerate(DECAY):
        powers = [1 << 30]
        for _ in range(means):
            powers.append(powers[-1] * decay >> 30)
        weights = np.array(powers, dtype=np.int64)[distance]
        spare = TOTAL_FREQ - alphabet
        freqs = 1 + weights * spare // weights.sum(axis=1, keepdims=True)
        rows = np.arange(means)
        freqs[rows, weights.argmax(axis=1)] += TOTAL_FREQ - freqs.sum(axis=1)
        tables[j] = freqs
    return tables


# ---------------------------------------------------------------------------- contexts


def padded_grid(cells: int, channels: int, height: int, width: int) -> np.ndarray:
    """Zeros (cells, channels, height + 3, width + 4): a grid with the border its contexts read
    (two rows above, one below, two columns each side)."""
    shape = (cells, channels, height + _PAD_TOP + _PAD_BOTTOM, width + 2 * _PAD_SIDE)
    return np.zeros(shape, dtype=np.int64)


def pad(grid: np.ndarray) -> np.ndarray:
    out = padded_grid(*grid.shape)
    out[:, :, _PAD_TOP:-_PAD_BOTTOM, _PAD_SIDE:-_PAD_SIDE] = grid
    return out


def coding_order(
    order: int, cells: int, height: int, width: int
) -> Iterator[tuple[np.ndarray, ...]]:
    """(cell, y, x) of the positions coded together, group after group: SPATIAL, each
    anti-diagonal 2y + x in turn, every cell at once, by cell then row; TEMPORAL, each cell in
    turn, every position at once, row-major."""
    if order == TEMPORAL:
        y, x = (a.ravel() for a in np.indices((height, width)))
        for cell in range(cells):
            yield np.full(y.shape, cell), y, x
        return
    for t in range(2 * (height - 1) + width):
        ys = np.arange(max(0, (t - width + 2) // 2), min(height - 1, t // 2) + 1)
        xs = t - 2 * ys
        cell = np.repeat(np.arange(cells), ys.size)
        yield cell, np.tile(ys, cells), np.tile(xs, cells)


def features(
    order: int, padded: np.ndarray, channel: int, cell: np.ndarray, y: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """(n, F) int64 contexts of positions (cell, y, x) of `channel` in a padded grid whose values
    before them in coding order are filled (the rest may hold anything: it is not read)."""
    channels = padded.shape[1]
    py, px = y + _PAD_TOP, x + _PAD_SIDE
    zero = np.zeros(cell.shape, dtype=np.int64)
    if order == SPATIAL:
        columns = [padded[cell, channel, py + dy, px + dx] for dy, dx in SPATIAL_NEIGHBOURS]
    else:  # the cell before (none before cell 0)
        before, first = np.maximum(cell - 1, 0), cell == 0
        columns = [
            np.where(first, 0, padded[before, channel, py + dy, px + dx])
            for dy, dx in TEMPORAL_NEIGHBOURS
        ]
    for k in range(1, channels):
        columns.append(padded[cell, channel - k, py, px] if channel >= k else zero)
    for k in range(channels):
        columns.append(zero + (k == channel))
    return np.clip(np.stack(columns, axis=1), -FEATURE_CLIP, FEATURE_CLIP)


def place_channel(padded: np.ndarray, channel: int, values: np.ndarray) -> None:
    """Write a decoded channel (cells, h, w) into a padded grid."""
    padded[:, channel, _PAD_TOP:-_PAD_BOTTOM, _PAD_SIDE:-_PAD_SIDE] = values


def unpad(padded: np.ndarray) -> np.ndarray:
    """The grid (cells, C, h, w) inside a padded one."""
    return padded[:, :, _PAD_TOP:-_PAD_BOTTOM, _PAD_SIDE:-_PAD_SIDE]


def _ordered(order: int, grid: np.ndarray, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """(features, values) of every value of `channel` of `grid`, in coding order."""
    padded = pad(grid)
    cells, _, height, width = grid.shape
    parts = [(features(order, padded, channel, *pos), grid[pos[0], channel, pos[1], pos[2]])
             for pos in coding_order(order, cells, height, width)]  # fmt: skip
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------------------- coding


def _probabilities(model: ContextModel, feats: np.ndarray, channels: int) -> np.ndarray:
    scale, mean = model.predict(feats, channels)
    return frequency_tables(model.alphabet)[scale, mean].astype(np.float64) / TOTAL_FREQ


def _bits(model: ContextModel, feats: np.ndarray, values: np.ndarray, channels: int) -> float:
    """Bits `values` with contexts `feats` (from `_ordered`) cost under `model`, to the coder's
    rounding."""
    scale, mean = model.predict(feats, channels)
    freqs = frequency_tables(model.alphabet)[scale, mean, values - model.low]
    return float(-np.log2(freqs / TOTAL_FREQ).sum())


def encode_channel(model: ContextModel, grid: np.ndarray, channel: int) -> bytes:
    """ANS payload (little-endian u32 words) of `channel` of `grid` (cells, C, h, w) int64."""
    import constriction

    feats, values = _ordered(model.order, grid, channel)
    ans = constriction.stream.stack.AnsCoder()
    family = constriction.stream.model.Categorical(perfect=False)
    symbols = (values - model.low).astype(np.int32)
    ans.encode_reverse(symbols, family, _probabilities(model, feats, grid.shape[1]))
    return ans.get_compressed().astype("<u4").tobytes()


def decode_channel(model: ContextModel, payload: bytes, padded: np.ndarray, channel: int) -> None:
    """Fill `channel` of `padded` (from `padded_grid`, earlier channels filled) from `payload`."""
    import constriction

    if len(payload) % 4:
        raise ArchiveError("latent context payload is not whole 32-bit words")
    cells, channels, height, width = padded.shape
    height, width = height - _PAD_TOP - _PAD_BOTTOM, width - 2 * _PAD_SIDE
    family = constriction.stream.model.Categorical(perfect=False)
    try:
        ans = constriction.stream.stack.AnsCoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        for cell, y, x in coding_order(model.order, cells, height, width):
            feats = features(model.order, padded, channel, cell, y, x)
            probs = _probabilities(model, feats, channels)
            symbols = ans.decode(family, probs)
            padded[cell, channel, y + _PAD_TOP, x + _PAD_SIDE] = (
                symbols.astype(np.int64) + model.low
            )
        leftover = not ans.is_empty()
    except (ValueError, RuntimeError) as exc:
        raise ArchiveError(f"latent context payload is corrupt: {exc}") from None
    if leftover:
        raise ArchiveError("latent context payload holds more than its channel")


# ---------------------------------------------------------------------------- fitting


class _FloatModel(nn.Module):
    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2),
        )  # fmt: skip

    def bits(self, feats: torch.Tensor, symbols: torch.Tensor, alphabet: int, low: int):  # noqa: ANN201
        out = self.net(feats)
        mean, log_scale = out[:, :1] - low, out[:, 1:].clamp(-2.5, 3.0)
        values = torch.arange(alphabet, dtype=feats.dtype)[None, :]
        logits = -(values - mean).abs() * torch.exp(-log_scale)
        nats = torch.logsumexp(logits, dim=1) - logits.gather(1, symbols[:, None])[:, 0]
        return nats / np.log(2)


def _quantised(net: _FloatModel, order: int, shift: int, low: int, alphabet: int) -> ContextModel:
    linears = [m for m in net.net if isinstance(m, nn.Linear)]
    params = []
    for k, layer in enumerate(linears):
        bias_unit = shift if k == 0 else shift + ACT_BITS
        params.append(torch.round(layer.weight.detach().double() * 2.0**shift).ravel())
        params.append(torch.round(layer.bias.detach().double() * 2.0**bias_unit))
    flat = torch.cat(params).clamp(-MAX_PARAM + 1, MAX_PARAM - 1).to(torch.int64).numpy()
    return ContextModel(order, FIT_HIDDEN, shift, low, alphabet, flat)


def writer_order(grid_shape: tuple[int, ...]) -> int:
    """The coding order the reference writer fits: SPATIAL for maps of more positions than the
    grid has cells, TEMPORAL otherwise."""
    cells, _, height, width = grid_shape
    return SPATIAL if height * width > cells else TEMPORAL


def fit(grid: np.ndarray, seed: int = 0) -> ContextModel | None:
    """A context model for `grid` (cells, C, h, w) int64 in `writer_order`, fitted in float to
    its values and rounded to integers (the weight precision of FIT_SHIFTS that codes shortest);
    None when the values span more than MAX_ALPHABET or the grid holds more than MAX_FIT_VALUES."""
    low, high = int(grid.min()), int(grid.max())
    alphabet = max(high - low + 1, 2)
    if alphabet > MAX_ALPHABET or grid.size > MAX_FIT_VALUES:
        return None
    channels, order = grid.shape[1], writer_order(grid.shape)
    ordered = [_ordered(order, grid, c) for c in range(channels)]
    feats = torch.from_numpy(np.concatenate([o[0] for o in ordered])).float()
    symbols = torch.from_numpy(np.concatenate([o[1] for o in ordered]) - low)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _FloatModel(feats.shape[1], FIT_HIDDEN)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, FIT_STEPS)
    for _ in range(FIT_STEPS):
        batch = torch.randint(
            0, symbols.shape[0], (min(FIT_BATCH, symbols.shape[0]),), generator=generator
        )
        loss = net.bits(feats[batch], symbols[batch], alphabet, low).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    candidates = [_quantised(net, order, s, low, alphabet) for s in FIT_SHIFTS]
    coder = get_coder(DEFAULT_CODER)

    def total_bits(model: ContextModel) -> float:
        stored = 8 * len(model.to_bytes(coder))
        return stored + sum(_bits(model, f, v, channels) for f, v in ordered)

    return min(candidates, key=total_bits)
