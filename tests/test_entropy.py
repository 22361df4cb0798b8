"""Entropy streams: exact round trips, cost against entropy, exact models, garbage, memory."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pfnr_codec import entropy
from pfnr_codec.byteio import uvarint
from pfnr_codec.entropy import (
    CODERS,
    DEFAULT_CODER,
    decode_bits,
    decode_floats,
    decode_ints,
    decode_latents,
    encode_bits,
    encode_floats,
    encode_ints,
    encode_latents,
    get_coder,
    ints_side_bytes,
)
from pfnr_codec.errors import ArchiveError, ConfigError
from pfnr_codec.rate import latent_channel_bits

CONSTRICTION = get_coder("constriction")


def _codes(seed: int, bits: int, n: int) -> np.ndarray:
    """Laplacian-shaped b-bit codes, like quantized weights."""
    rng = np.random.default_rng(seed)
    qmax = 2 ** (bits - 1) - 1
    return np.clip(np.rint(rng.laplace(0, qmax / 5 + 0.3, n)), -qmax, qmax).astype(np.int32)


def _h2(p: float) -> float:
    return float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))


def test_coder_names() -> None:
    assert DEFAULT_CODER in CODERS
    for name in CODERS:
        assert get_coder(name).name == name
    with pytest.raises(ConfigError, match="constriction, torchac"):
        get_coder("huffman")


@pytest.mark.parametrize("bits", range(2, 9))
def test_ints_round_trip_every_bit_width(bits: int) -> None:
    codes = _codes(bits, bits, 5000)
    data = encode_ints(codes, CONSTRICTION)
    out = decode_ints(data, codes.size, CONSTRICTION)
    assert out.dtype == np.int32 and np.array_equal(out, codes)


@pytest.mark.parametrize(
    "values",
    [
        np.zeros(0, np.int32),
        np.full(17, -3, np.int64),
        np.array([0, 1], np.int16),
        np.random.default_rng(1).integers(0, 256, 4000).astype(np.uint8),  # pixels
        np.array([-(2**31), 2**31 - 1, 5, 5], np.int64),  # range too wide: raw mode
    ],
)
def test_ints_round_trip_edge_cases(values: np.ndarray) -> None:
    out = decode_ints(encode_ints(values, CONSTRICTION), values.size, CONSTRICTION)
    assert out.dtype == np.int32 and np.array_equal(out, values.astype(np.int64))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_bits_round_trip_and_cost(p: float) -> None:
    rng = np.random.default_rng(int(p * 100))
    mask = rng.random(20_000) < p
    data = encode_bits(mask, CONSTRICTION)
    out = decode_bits(data, mask.size, CONSTRICTION)
    assert out.dtype == np.bool_ and np.array_equal(out, mask)
    measured = mask.mean()
    assert 8 * len(data) <= 1.02 * mask.size * _h2(measured) + 8 * 6


@pytest.mark.parametrize("value", [False, True])
def test_constant_masks_cost_nothing(value: bool) -> None:
    mask = np.full(100_000, value)
    data = encode_bits(mask, CONSTRICTION)
    assert len(data) <= 2
    assert np.array_equal(decode_bits(data, mask.size, CONSTRICTION), mask)
    assert decode_bits(encode_bits(mask[:0], CONSTRICTION), 0, CONSTRICTION).shape == (0,)


def test_structured_masks_beat_order0() -> None:
    """One decision per 3x3 kernel, or clustered runs: the run-length model must pay off."""
    rng = np.random.default_rng(5)
    per_kernel = np.repeat(rng.random(4000) < 0.3, 9)
    clustered = np.repeat(rng.random(800) < 0.2, rng.integers(20, 200, 800))
    for mask in (per_kernel, clustered):
        data = encode_bits(mask, CONSTRICTION)
        assert np.array_equal(decode_bits(data, mask.size, CONSTRICTION), mask)
        order0_bits = mask.size * _h2(mask.mean())
        assert 8 * len(data) < 0.5 * order0_bits


def test_sparse_mask_near_entropy() -> None:
    mask = np.zeros(200_000, bool)
    mask[np.random.default_rng(2).choice(mask.size, 40, replace=False)] = True
    data = encode_bits(mask, CONSTRICTION)
    assert np.array_equal(decode_bits(data, mask.size, CONSTRICTION), mask)
    assert 8 * len(data) <= 1.02 * mask.size * _h2(mask.mean()) + 8 * 8


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_ints_cost_within_1pct_of_entropy_plus_side_info(bits: int) -> None:
    """Side information counted: mode byte, offset, alphabet size and the histogram."""
    codes = _codes(10 + bits, bits, 50_000)
    data = encode_ints(codes, CONSTRICTION)
    _, counts = np.unique(codes, return_counts=True)
    entropy_bits = float(-(counts * np.log2(counts / codes.size)).sum())
    side = ints_side_bytes(data)
    assert 8 * (len(data) - side) <= 1.01 * entropy_bits + 64  # + ANS final state
    assert side <= 4 + 2 * (2**bits)  # the histogram stays small


def test_constriction_reproduces_the_integer_model_exactly() -> None:
    """Decode at both edges of every coding interval: the 24-bit table must be the exact formula
    floor(C_i * (2**24 - n) / 2**16) + i that the module docstring relies on."""
    ans = pytest.importorskip("constriction").stream.stack.AnsCoder
    rng = np.random.default_rng(3)
    for n in (2, 3, 17, 255):
        counts = rng.integers(1, 1000, n) ** 2
        freqs = entropy.normalize_counts(counts, 1 << 16)
        model = CONSTRICTION._model(freqs)
        left = np.concatenate(([0], np.cumsum(freqs)[:-1]))
        cdf = list(left * (2**24 - n) // 2**16 + np.arange(n)) + [2**24]
        for i in range(n):
            for quantile in (cdf[i], cdf[i + 1] - 1):
                coder = ans(np.array([quantile, 1], dtype=np.uint32))
                assert coder.decode(model) == i


def test_floats_bit_exact() -> None:
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, 3.4e38], np.float32)
    nan = np.array([0x7FC00001, 0xFFA12345], np.uint32).view(np.float32)  # NaN payloads
    noise = np.random.default_rng(0).standard_normal(300).astype(np.float32)
    for values in (np.concatenate([specials, nan, noise]), np.zeros(1000, np.float32), noise[:0]):
        data = encode_floats(values)
        out = decode_floats(data, values.size)
        assert out.dtype == np.float32
        assert np.array_equal(out.view(np.uint32), values.view(np.uint32))
    assert len(encode_floats(np.zeros(1000, np.float32))) < 100  # zstd where it helps
    with pytest.raises(ConfigError):
        encode_floats(noise.astype(np.float64))


def test_garbage_and_truncation_raise_archive_error_only() -> None:
    rng = np.random.default_rng(7)
    mask = rng.random(3000) < 0.3
    codes = _codes(0, 8, 3000)
    good = [
        (encode_ints(codes, CONSTRICTION), decode_ints, codes.size),
        (encode_bits(mask, CONSTRICTION), decode_bits, mask.size),
        (encode_bits(np.repeat(mask[:300], 10), CONSTRICTION), decode_bits, mask.size),
    ]
    samples = []
    for _, fn, count in good:
        samples += [(rng.bytes(n), fn, count) for n in (0, 1, 3, 8, 50, 400)]
    for data, fn, count in good:
        samples += [(data[:cut], fn, count) for cut in range(0, len(data), 7)]
        flips = rng.integers(0, len(data), 40)
        samples += [(data[:i] + bytes([data[i] ^ 0x55]) + data[i + 1 :], fn, count) for i in flips]
    samples += [(bytes([1]) + rng.bytes(30), decode_floats, 9)]
    for data, fn, count in samples:
        args = (data, count) if fn is decode_floats else (data, count, CONSTRICTION)
        try:
            out = fn(*args)
        except ArchiveError:
            continue
        assert out.shape == (count,)  # garbage that parses must still honour the count
    with pytest.raises(ArchiveError):
        decode_ints(encode_ints(codes, CONSTRICTION), 1 << 40, CONSTRICTION)


def test_torchac_round_trip_and_silent_import() -> None:
    """torchac compiles on first import and prints; a fresh process must print nothing."""
    script = textwrap.dedent(
        """
        import numpy as np
        from pfnr_codec.entropy import *
        coder = get_coder("torchac")
        rng = np.random.default_rng(0)
        codes = np.clip(np.rint(rng.laplace(0, 6, 70000)), -31, 31).astype(np.int32)
        mask = rng.random(5000) < 0.3
        walk = np.cumsum(rng.integers(-1, 2, (12, 300)), axis=0).astype(np.int32)
        assert np.array_equal(decode_latents(encode_latents(walk, coder), 12, 300, coder), walk)
        assert np.array_equal(decode_ints(encode_ints(codes, coder), codes.size, coder), codes)
        assert np.array_equal(decode_bits(encode_bits(mask, coder), mask.size, coder), mask)
        a, b = encode_ints(codes, coder), encode_ints(codes, get_coder("constriction"))
        assert abs(len(a) - len(b)) < 0.01 * len(b), (len(a), len(b))
        try:
            decode_ints(a[:-40] + bytes(40), codes.size, coder)
        except ArchiveError:
            pass
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""


MEMORY_SCRIPT = """
import resource, sys
import numpy as np
from pfnr_codec.entropy import *
coder = get_coder(sys.argv[1])
rng = np.random.default_rng(0)
n = 10_000_000
codes = np.empty(n, np.int32)
for s in range(0, n, 1_000_000):
    codes[s:s + 1_000_000] = np.clip(np.rint(rng.laplace(0, 20, 1_000_000)), -127, 127)
mask = np.empty(n, bool)
for s in range(0, n, 1_000_000):
    mask[s:s + 1_000_000] = rng.random(1_000_000) < 0.3
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
a = encode_ints(codes, coder)
assert np.array_equal(decode_ints(a, n, coder), codes)
del a
b = encode_bits(mask, coder)
assert np.array_equal(decode_bits(b, n, coder), mask)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_ten_million_symbols_memory() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, DEFAULT_CODER],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) <= 300  # MB of peak growth while coding 10M codes and 10M mask bits


def _latent_walk(seed: int, cells: int, positions: int) -> np.ndarray:
    """Latents that change little from one cell to the next, like a grid's cells of nearby frames."""
    rng = np.random.default_rng(seed)
    start = np.rint(rng.laplace(0, 3, positions))
    steps = rng.choice([-1, 0, 0, 0, 1], size=(cells - 1, positions))
    return np.concatenate([start[None], start + np.cumsum(steps, axis=0)]).astype(np.int32)


@pytest.mark.parametrize(("cells", "positions"), [(1, 50), (2, 1), (17, 400), (40, 3)])
def test_latents_round_trip(cells: int, positions: int) -> None:
    walk = _latent_walk(cells, cells, positions)
    data = encode_latents(walk, CONSTRICTION)
    assert np.array_equal(decode_latents(data, cells, positions, CONSTRICTION), walk)
    iid = np.rint(np.random.default_rng(1).laplace(0, 3, (cells, positions))).astype(np.int64)
    data = encode_latents(iid, CONSTRICTION)
    assert np.array_equal(decode_latents(data, cells, positions, CONSTRICTION), iid)


def test_latents_use_the_cell_before_when_it_pays_and_never_cost_more_than_plain() -> None:
    walk = _latent_walk(3, 20, 2000)
    plain = len(encode_ints(walk.ravel(), CONSTRICTION))
    coded = encode_latents(walk, CONSTRICTION)
    assert coded[0] == entropy._LATENT_TEMPORAL and len(coded) < 0.7 * plain, (len(coded), plain)
    iid = np.rint(np.random.default_rng(4).laplace(0, 3, (20, 2000))).astype(np.int64)
    plain = len(encode_ints(iid.ravel(), CONSTRICTION))
    coded = encode_latents(iid, CONSTRICTION)
    assert coded[0] == entropy._LATENT_PLAIN and len(coded) == plain + 1


def test_crafted_latents_streams_are_refused() -> None:
    """Class counts that do not add up, a class that runs dry, a clip out of range, garbage."""
    walk = _latent_walk(5, 6, 40)

    def temporal(parts: list[tuple[int, np.ndarray]], clip: int = 1) -> bytes:
        out = [bytes([entropy._LATENT_TEMPORAL, clip])]
        for count, values in parts:
            data = encode_ints(values, CONSTRICTION)
            out += [uvarint(count), uvarint(len(data)), data]
        return b"".join(out)

    zeros = np.zeros(240, dtype=np.int32)
    everything_in_class_0 = temporal([(240, zeros)] + [(0, zeros[:0])] * 3)
    with pytest.raises(ArchiveError, match="context class 2 holds fewer values"):
        decode_latents(everything_in_class_0, 6, 40, CONSTRICTION)
    too_few = temporal([(40, zeros[:40])] + [(0, zeros[:0])] * 3)
    with pytest.raises(ArchiveError, match="context classes hold 40 values, the grid has 240"):
        decode_latents(too_few, 6, 40, CONSTRICTION)
    too_many = temporal([(200, zeros[:200]), (200, zeros[:200]), (0, zeros[:0]), (0, zeros[:0])])
    with pytest.raises(ArchiveError, match="more than the 240 values"):
        decode_latents(too_many, 6, 40, CONSTRICTION)
    for clip in (0, entropy.MAX_CONTEXT_CLIP + 1):
        with pytest.raises(ArchiveError, match="context clip must be"):
            decode_latents(bytes([entropy._LATENT_TEMPORAL, clip]), 6, 40, CONSTRICTION)
    with pytest.raises(ArchiveError, match="unknown mode 7"):
        decode_latents(bytes([7]), 6, 40, CONSTRICTION)
    good = encode_latents(walk, CONSTRICTION)
    samples = [good[:cut] for cut in range(0, len(good), 5)]
    samples += [good[:i] + bytes([good[i] ^ 0x24]) + good[i + 1 :] for i in range(len(good))]
    for data in samples:
        try:
            out = decode_latents(data, 6, 40, CONSTRICTION)
        except ArchiveError:
            continue
        assert out.shape == (6, 40)


def _smooth_maps(seed: int, cells: int, height: int, width: int) -> np.ndarray:
    """Latent maps whose neighbouring positions are alike (like a fine grid under a moving camera:
    each cell its own picture, so the cell before predicts little)."""
    rng = np.random.default_rng(seed)
    field = np.cumsum(np.cumsum(rng.integers(-1, 2, (cells, height, width)), 1), 2)
    return (field // 4).reshape(cells, height * width).astype(np.int64)


def _spatial_stream(values: np.ndarray, width: int, clip: int) -> bytes:
    """A SPATIAL latents stream whatever mode the writer would pick."""
    grid = values.reshape(values.shape[0], -1, width)
    order = entropy._wavefront_order(*grid.shape)
    classes = entropy.spatial_classes(grid, clip).ravel()[order]
    return entropy._encode_split(
        entropy._LATENT_SPATIAL, clip, grid.ravel()[order], classes, CONSTRICTION
    )


@pytest.mark.parametrize(
    ("cells", "height", "width"), [(1, 1, 1), (1, 7, 1), (3, 1, 9), (5, 6, 11), (2, 20, 30)]
)
def test_spatial_latents_round_trip(cells: int, height: int, width: int) -> None:
    for values in (
        _smooth_maps(cells, cells, height, width),
        np.rint(np.random.default_rng(2).laplace(0, 2, (cells, height * width))).astype(np.int64),
    ):
        for clip in entropy.LATENT_SPATIAL_CLIPS:
            data = _spatial_stream(values, width, clip)
            out = decode_latents(data, cells, height * width, CONSTRICTION, width)
            assert np.array_equal(out, values)
        data = encode_latents(values, CONSTRICTION, width)
        assert np.array_equal(
            decode_latents(data, cells, height * width, CONSTRICTION, width), values
        )


def test_latents_use_the_neighbours_when_they_pay() -> None:
    maps = _smooth_maps(7, 12, 30, 40)
    temporal_only = encode_latents(maps, CONSTRICTION)
    coded = encode_latents(maps, CONSTRICTION, 40)
    assert coded[0] == entropy._LATENT_SPATIAL, coded[0]
    assert len(coded) < 0.8 * len(temporal_only), (len(coded), len(temporal_only))
    walk = _latent_walk(3, 20, 2000)  # the cell before predicts best: TEMPORAL stays
    assert encode_latents(walk, CONSTRICTION, 50)[0] == entropy._LATENT_TEMPORAL


def test_the_rate_estimate_follows_the_spatial_context() -> None:
    """Training's estimate of a latent channel's size sees the context the writer will use."""
    maps = _smooth_maps(8, 12, 30, 40)
    with_width = latent_channel_bits(maps, 40) / 8
    coded = len(encode_latents(maps, CONSTRICTION, 40))
    assert with_width < latent_channel_bits(maps) / 8
    assert 0.8 * coded < with_width < coded, (with_width, coded)


def test_crafted_spatial_latents_streams_are_refused() -> None:
    maps = _smooth_maps(9, 4, 6, 10)
    good = _spatial_stream(maps, 10, 2)
    with pytest.raises(ArchiveError, match="defined from format 1.4"):
        decode_latents(good, 4, 60, CONSTRICTION)  # a file before 1.4 has no width to give
    with pytest.raises(ArchiveError, match="cannot be 7 wide"):
        decode_latents(good, 4, 60, CONSTRICTION, 7)
    for clip in (0, entropy.MAX_SPATIAL_CLIP + 1):
        with pytest.raises(ArchiveError, match="context clip must be"):
            decode_latents(bytes([entropy._LATENT_SPATIAL, clip]), 4, 60, CONSTRICTION, 10)
    zeros = np.zeros(240, dtype=np.int32)
    out = [bytes([entropy._LATENT_SPATIAL, 1])]
    for k in range(9):  # every value claimed by class 8 (left and up both >= 1): class 4 runs dry
        part = encode_ints(zeros if k == 8 else zeros[:0], CONSTRICTION)
        out += [uvarint(240 if k == 8 else 0), uvarint(len(part)), part]
    with pytest.raises(ArchiveError, match="fewer values than the grid reads"):
        decode_latents(b"".join(out), 4, 60, CONSTRICTION, 10)
    samples = [good[:cut] for cut in range(0, len(good), 3)]
    samples += [good[:i] + bytes([good[i] ^ 0x24]) + good[i + 1 :] for i in range(len(good))]
    for data in samples:
        try:
            decoded = decode_latents(data, 4, 60, CONSTRICTION, 10)
        except ArchiveError:
            continue
        assert decoded.shape == (4, 60)
