"""The latent context model (format 1.6): exact round trips, integer tables, bounded inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pfnr_codec import arm
from pfnr_codec.bitstream import pack_grid, unpack_grid
from pfnr_codec.coders import TOTAL_FREQ, get_coder
from pfnr_codec.errors import ArchiveError

from synthetic import grid_with_context

CODER = get_coder("constriction")


@pytest.fixture(scope="module")
def grid() -> np.ndarray:
    return grid_with_context(np.random.default_rng(6))


@pytest.fixture(scope="module")
def packed(grid) -> dict[str, bytes]:
    return pack_grid("grid", grid, CODER, (1, 6))


def test_frequency_tables_are_whole_and_peak_at_the_mean():
    tables = arm.frequency_tables(5)
    assert tables.shape == (arm.SCALE_BINS, 33, 5)
    assert (tables.sum(axis=2) == TOTAL_FREQ).all() and tables.min() >= 1
    sharp = tables[0]  # smallest scale: nearly all mass on the value nearest the mean
    assert sharp[16].argmax() == 2 and sharp[16, 2] > 0.99 * TOTAL_FREQ
    assert (tables[-1].max(axis=1) < 0.5 * TOTAL_FREQ).all()  # widest scale: spread out


def test_a_grid_with_context_is_coded_by_its_model_and_decodes_exactly(grid, packed):
    plain = pack_grid("grid", grid, CODER, (1, 5))
    assert "grid/arm" in packed and "grid/arm" not in plain
    modes = {packed[f"grid/{c}"][0] for c in range(grid.shape[1])}
    assert arm.LATENT_ARM_MODE in modes
    size, plain_size = sum(map(len, packed.values())), sum(map(len, plain.values()))
    assert size < 0.8 * plain_size, (size, plain_size)
    assert np.array_equal(unpack_grid(packed, "grid", grid.shape, CODER, (1, 6)), grid)


def test_a_channel_decodes_exactly_with_every_scale_and_mean(grid):
    """A model with random integer weights spreads its predictions over the tables; whatever it
    predicts, encoder and decoder agree."""
    rng = np.random.default_rng(1)
    for order in (arm.SPATIAL, arm.TEMPORAL):
        params = rng.integers(-400, 400, arm.param_count(order, grid.shape[1], 5))
        low, alphabet = int(grid.min()), int(grid.max() - grid.min() + 1)
        model = arm.ContextModel(order, 5, 8, low, alphabet, params)
        feats = arm.features(order, arm.pad(grid), 1, *_all(grid))
        scale, mean = model.predict(feats, grid.shape[1])
        assert len(np.unique(scale)) > 4 and len(np.unique(mean)) > 8
        padded = arm.padded_grid(*grid.shape)
        arm.place_channel(padded, 0, grid[:, 0])
        arm.decode_channel(model, arm.encode_channel(model, grid, 1), padded, 1)
        assert np.array_equal(arm.unpad(padded)[:, 1], grid[:, 1])


def _all(grid):
    cells, _, height, width = grid.shape
    cell, y, x = (a.ravel() for a in np.indices((cells, height, width)))
    return cell, y, x


@pytest.mark.parametrize("order", [0, 1], ids=["spatial", "temporal"])
def test_the_coding_order_reads_only_values_coded_before(grid, order):
    """Every context a value sees is the same whether the grid is whole or filled only up to the
    value's group in coding order (the decoder's view), and the groups cover every value once."""
    cells, channels, height, width = grid.shape
    partial = arm.padded_grid(cells, channels, height, width)
    arm.place_channel(partial, 0, grid[:, 0])
    whole = arm.pad(grid)
    seen = np.zeros((cells, height, width), dtype=int)
    for cell, y, x in arm.coding_order(order, cells, height, width):
        assert np.array_equal(
            arm.features(order, partial, 1, cell, y, x), arm.features(order, whole, 1, cell, y, x)
        )
        partial[cell, 1, y + 2, x + 2] = grid[cell, 1, y, x]
        seen[cell, y, x] += 1
    assert (seen == 1).all()
    assert np.array_equal(arm.unpad(partial)[:, 1], grid[:, 1])


def test_per_frame_maps_are_coded_by_the_cell_before_larger_maps_by_their_neighbours():
    assert arm.writer_order((250, 8, 8, 18)) == arm.TEMPORAL  # bikes' 1-step grid
    assert arm.writer_order((39, 4, 40, 90)) == arm.SPATIAL  # its fine grid


def test_mode_3_is_refused_before_format_1_6(packed, grid):
    with pytest.raises(ArchiveError, match="mode 3"):
        unpack_grid(packed, "grid", grid.shape, CODER, (1, 5))


def test_a_mode_3_channel_without_its_model_is_refused(packed, grid):
    streams = {k: v for k, v in packed.items() if k != "grid/arm"}
    with pytest.raises(ArchiveError, match="grid/arm"):
        unpack_grid(streams, "grid", grid.shape, CODER, (1, 6))


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-4],  # a word short
        lambda d: d + b"\x01\x00\x00\x00",  # a word too many
        lambda d: d[:-1],  # not whole words
        lambda d: d[:1],  # nothing
    ],
    ids=["short", "long", "ragged", "empty"],
)
def test_a_damaged_payload_is_refused_or_decodes_within_the_alphabet(packed, grid, damage):
    arm_channel = next(c for c in range(grid.shape[1]) if packed[f"grid/{c}"][0] == 3)
    streams = dict(packed)
    streams[f"grid/{arm_channel}"] = damage(packed[f"grid/{arm_channel}"])
    try:
        out = unpack_grid(streams, "grid", grid.shape, CODER, (1, 6))
    except ArchiveError:
        return
    assert out.min() >= grid.min() - 64 and not np.array_equal(out, grid)


def _model_bytes(hidden=4, shift=8, low=-3, alphabet=7, params=None, channels=3, order=0) -> bytes:
    if params is None:
        params = np.zeros(arm.param_count(order, channels, hidden), dtype=np.int64)
    return arm.ContextModel(order, hidden, shift, low, alphabet, params).to_bytes(CODER)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_model_bytes(hidden=0), "hidden width"),
        (_model_bytes(hidden=65), "hidden width"),
        (_model_bytes(shift=7), "weight shift"),
        (_model_bytes(shift=25), "weight shift"),
        (_model_bytes(alphabet=1), "alphabet"),
        (_model_bytes(alphabet=65), "alphabet"),
        (_model_bytes(params=np.full(arm.param_count(0, 3, 4), 1 << 30)), "exceeds"),
        (_model_bytes(params=np.arange(arm.param_count(0, 4, 4)) % 7 - 3, channels=4), "corrupt"),
        (bytes([2]) + _model_bytes()[1:], "coding order"),
        (_model_bytes()[:5], "end|count"),
    ],
)
def test_a_crafted_model_is_refused(data, message):
    with pytest.raises(ArchiveError, match=message):
        arm.ContextModel.from_bytes(data, 3, CODER)


def test_a_stored_model_reads_back_and_predicts_the_same(packed, grid):
    model = arm.ContextModel.from_bytes(packed["grid/arm"], grid.shape[1], CODER)
    again = arm.ContextModel.from_bytes(model.to_bytes(CODER), grid.shape[1], CODER)
    feats = arm.features(model.order, arm.pad(grid), 2, *_all(grid))
    for a, b in zip(model.predict(feats, 3), again.predict(feats, 3), strict=True):
        assert np.array_equal(a, b)


def test_small_grids_and_wide_ranges_keep_the_context_split():
    small = grid_with_context(np.random.default_rng(2), shape=(2, 2, 6, 8))
    assert "g/arm" not in pack_grid("g", small, CODER, (1, 6))
    assert arm.fit(np.arange(-40, 40).reshape(1, 1, 4, 20)) is None
    assert arm.fit(np.zeros((1, 1, 1, arm.MAX_FIT_VALUES + 1), dtype=np.int64)) is None


@pytest.mark.parametrize("weight_bits", [20, 32])
def test_the_network_s_products_are_exact_on_either_path(weight_bits):
    """Products whose partial sums stay below 2^53 run in float64 BLAS, others in int64: both
    equal the exact integer result (Python integers)."""
    rng = np.random.default_rng(weight_bits)
    limit = 1 << weight_bits  # 2^20 x 2^20 x 16 stays below 2^53; 2^32 does not
    w = rng.integers(-limit, limit, (16, 16))
    x = rng.integers(0, arm.ACT_MAX + 1, (50, 16))
    x[0] = arm.ACT_MAX
    got = arm.exact_product(x, w, arm.ACT_MAX)
    expected = [
        [sum(int(a) * int(b) for a, b in zip(row, col, strict=True)) for col in w] for row in x
    ]
    assert got.dtype == np.int64 and got.tolist() == expected
