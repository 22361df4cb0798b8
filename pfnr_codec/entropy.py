"""Self-contained byte streams of integer codes, mask bits and float side information.

Layouts in docs/FORMAT.md; the symbols go through one of the coders of `coders.py`:
- ints stream: value offset, alphabet size and an integer histogram (the side information),
  then the coder payload;
- bits stream: constant, order-0 or run-length coded, whichever is shortest;
- floats stream: raw little-endian float32, zstd-compressed when that is shorter;
- latents stream (format 1.2): one channel of a latent grid, either one ints stream or split by a
  temporal context (the value at the same position one cell earlier) or (1.4) a spatial one (the
  left and upper neighbours in the same cell) into one ints stream per context class, whichever
  is shortest.
"""

from __future__ import annotations

import numpy as np
import zstandard

from .byteio import Reader, unzigzag, uvarint, zigzag, zstd_decompress
from .coders import (
    CODERS,
    DEFAULT_CODER,
    MAX_COUNT,
    PRECISION_BITS,
    TOTAL_FREQ,
    EntropyCoder,
    check_count,
    get_coder,
)
from .errors import ArchiveError, ConfigError

__all__ = [
    "CODERS",
    "DEFAULT_CODER",
    "EntropyCoder",
    "decode_bits",
    "decode_floats",
    "decode_ints",
    "decode_latents",
    "encode_bits",
    "encode_floats",
    "encode_ints",
    "context_classes",
    "latent_context_splits",
    "spatial_classes",
    "encode_latents",
    "get_coder",
    "ints_side_bytes",
    "normalize_counts",
]

MAX_ALPHABET = 4096  # widest value range of a coded ints stream; wider ranges are stored raw

_INT_CONST, _INT_CODED, _INT_RAW = 0, 1, 2
_BITS_CONST, _BITS_ORDER0, _BITS_RUNS = 0, 1, 2
_FLOAT_RAW, _FLOAT_ZSTD = 0, 1
_LATENT_PLAIN, _LATENT_TEMPORAL, _LATENT_SPATIAL = 0, 1, 2

MAX_CONTEXT_CLIP = 16  # widest context of a latents stream: classes for -K..K, plus the first cell
LATENT_CONTEXT_CLIPS = (2, 4)  # the clips an encoder tries
MAX_SPATIAL_CLIP = 7  # widest spatial context: (2K + 1)^2 classes of (left, up), 225 at most
LATENT_SPATIAL_CLIPS = (1, 2)  # the spatial clips an encoder tries (format 1.4)

_RUN_DIRECT = 64  # run lengths 1..64 have their own symbol; longer ones use an octave + raw bits
_RUN_MAX_SYMBOL = _RUN_DIRECT + (MAX_COUNT - 1).bit_length() - 7


def _bit_length(values: np.ndarray) -> np.ndarray:
    """Exact bit length of non-negative integers below 2**62."""
    return np.searchsorted(1 << np.arange(63, dtype=np.int64), values, side="right")


def _zstd_compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19, write_content_size=True).compress(raw)


def _zstd_decompress(data: bytes, size: int, where: str) -> bytes:
    """One zstd frame that must declare exactly `size` bytes (no bombs, no trailer)."""
    return zstd_decompress(data, where, limit=size, size=size)


# ---------------------------------------------------------------------------- histogram model


def normalize_counts(counts: np.ndarray, total: int) -> np.ndarray:
    """Integer frequencies summing to `total`, >= 1 wherever counts > 0, close to counts' shape."""
    counts = np.asarray(counts, dtype=np.int64)
    used = counts > 0
    n_used = int(used.sum())
    if n_used == 0 or n_used > total:
        raise ConfigError(f"cannot give {n_used} used symbols non-zero frequencies out of {total}")
    freqs = counts * total // int(counts.sum())
    freqs[used] = np.maximum(freqs[used], 1)
    diff = total - int(freqs.sum())
    while diff:
        if diff > 0:  # hand out units where they save the most bits
            idx = np.flatnonzero(used)
            f = freqs[idx].astype(np.float64)
            gain = counts[idx] * np.log2((f + 1) / f)
            take = min(diff, idx.shape[0])
            freqs[idx[np.argpartition(-gain, take - 1)[:take]]] += 1
            diff -= take
        else:  # take units back where that costs the fewest bits
            idx = np.flatnonzero(freqs > 1)
            f = freqs[idx].astype(np.float64)
            loss = counts[idx] * np.log2(f / (f - 1))
            take = min(-diff, idx.shape[0])
            freqs[idx[np.argpartition(loss, take - 1)[:take]]] -= 1
            diff += take
    return freqs


def _gamma_bits(values: np.ndarray) -> str:
    """Elias-gamma code (values >= 1) as a '0'/'1' string."""
    return "".join("0" * (int(v).bit_length() - 1) + format(int(v), "b") for v in values)


def _histogram_to_bytes(freqs: np.ndarray, k: int) -> bytes:
    """Byte k (| 0x80 for delta coding), then gamma codes of freqs+1 or zigzag(delta)+1."""
    deltas = np.diff(freqs, prepend=0)
    plain_codes = freqs + 1
    delta_codes = np.where(deltas >= 0, 2 * deltas, -2 * deltas - 1) + 1
    plain_cost = int((2 * _bit_length(plain_codes) - 1).sum())
    delta_cost = int((2 * _bit_length(delta_codes) - 1).sum())
    flag, codes = (0x80, delta_codes) if delta_cost < plain_cost else (0, plain_codes)
    bits = _gamma_bits(codes)
    bits += "0" * (-len(bits) % 8)
    return bytes([k | flag]) + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _histogram_from_bytes(reader: Reader, n: int) -> tuple[np.ndarray, int]:
    head = reader.u8()
    k, delta = head & 0x7F, bool(head & 0x80)
    if not 1 <= k <= PRECISION_BITS:
        raise reader.fail(f"histogram precision must be 1..{PRECISION_BITS} bits, found {k}")
    max_len = 2 * (k + 2)  # longest gamma code a valid table can contain
    avail = min(len(reader.data) - reader.pos, (n * max_len + 7) // 8)
    raw = bytes(reader.data[reader.pos : reader.pos + avail])
    bits = format(int.from_bytes(raw, "big"), "b").zfill(8 * len(raw)) if raw else ""
    values, pos = [], 0
    for _ in range(n):
        one = bits.find("1", pos)
        zeros = one - pos
        if one < 0 or zeros >= max_len // 2 or one + zeros >= len(bits):
            raise reader.fail("corrupt histogram")
        values.append(int(bits[one : one + zeros + 1], 2))
        pos = one + zeros + 1
    reader.take((pos + 7) // 8)
    codes = np.array(values, dtype=np.int64) - 1
    if delta:
        freqs = np.cumsum(np.where(codes % 2 == 0, codes // 2, -(codes + 1) // 2))
    else:
        freqs = codes
    if freqs.min() < 0 or int(freqs.sum()) != 1 << k:
        raise reader.fail(f"histogram does not sum to 2**{k}")
    return freqs, k


def _choose_histogram(counts: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Pick the histogram precision k that minimises side information + estimated payload."""
    n_used = int((counts > 0).sum())
    best: tuple[float, np.ndarray, bytes] | None = None
    for k in range(max(1, (n_used - 1).bit_length()), PRECISION_BITS + 1):
        freqs = normalize_counts(counts, 1 << k)
        side = _histogram_to_bytes(freqs, k)
        used = counts > 0
        payload = float(-(counts[used] * np.log2(freqs[used] / float(1 << k))).sum())
        cost = payload + 8 * len(side)
        if best is None or cost < best[0]:
            best = (cost, freqs << (PRECISION_BITS - k), side)
    assert best is not None
    return best[1], best[2]


# ---------------------------------------------------------------------------- ints streams


def encode_ints(values: np.ndarray, coder: EntropyCoder) -> bytes:
    """Self-contained stream for a 1-D integer array with a small value range.

    Layout: mode byte; CONST: zigzag uvarint value. CODED: zigzag uvarint offset, uvarint alphabet
    size n, histogram (precision byte + gamma codes), coder payload. RAW (range wider than
    MAX_ALPHABET): zstd of little-endian int32. The histogram is side information counted in the
    stream's own bytes.
    """
    values = np.asarray(values)
    if values.ndim != 1 or (values.size and not np.issubdtype(values.dtype, np.integer)):
        raise ConfigError(
            f"encode_ints wants a 1-D integer array, got {values.dtype}{values.shape}"
        )
    if values.shape[0] > MAX_COUNT:
        raise ConfigError(f"encode_ints codes at most {MAX_COUNT} values, got {values.shape[0]}")
    if values.size == 0:
        return bytes([_INT_CONST]) + uvarint(0)
    lo, hi = int(values.min()), int(values.max())
    if lo < -(2**31) or hi >= 2**31:
        raise ConfigError(f"encode_ints values must fit int32, found {lo}..{hi}")
    if lo == hi:
        return bytes([_INT_CONST]) + uvarint(zigzag(lo))
    n = hi - lo + 1
    if n > MAX_ALPHABET:
        return bytes([_INT_RAW]) + _zstd_compress(values.astype("<i4").tobytes())
    shifted = (values - np.asarray(lo, dtype=values.dtype)).astype(np.int32)
    freqs, side = _choose_histogram(np.bincount(shifted, minlength=n))
    head = bytes([_INT_CODED]) + uvarint(zigzag(lo)) + uvarint(n)
    return head + side + coder.encode(shifted, freqs)


def decode_ints(data: bytes, count: int, coder: EntropyCoder) -> np.ndarray:
    """Inverse of encode_ints: an int32 array of length `count`."""
    count = check_count(count, "ints stream")
    reader = Reader(data, "ints stream")
    mode = reader.u8()
    if mode == _INT_CONST:
        value = unzigzag(reader.uvarint(2**32))
        reader.end()
        if not -(2**31) <= value < 2**31:
            raise reader.fail(f"constant {value} does not fit int32")
        return np.full(count, value, dtype=np.int32)
    if mode == _INT_RAW:
        raw = _zstd_decompress(reader.rest(), 4 * count, "ints stream (raw)")
        return np.frombuffer(raw, "<i4").astype(np.int32)
    if mode != _INT_CODED:
        raise ArchiveError(f"ints stream: unknown mode {mode} (expected 0, 1 or 2)")
    lo = unzigzag(reader.uvarint(2**32))
    n = reader.uvarint(MAX_ALPHABET)
    if n < 2 or lo < -(2**31) or lo + n > 2**31:
        raise reader.fail(f"value range {lo}+[0, {n}) is invalid")
    freqs, k = _histogram_from_bytes(reader, n)
    freqs = freqs << (PRECISION_BITS - k)
    symbols = coder.decode(reader.rest(), freqs, count)
    return (symbols + np.int32(lo)).astype(np.int32) if lo else symbols


def ints_side_bytes(data: bytes) -> int:
    """Bytes of an ints stream before its coder payload: the side information (mode byte, offset,
    alphabet size, histogram). The whole stream for constant and raw streams."""
    reader = Reader(data, "ints stream")
    if reader.u8() != _INT_CODED:
        return len(data)
    reader.uvarint(2**32)
    _histogram_from_bytes(reader, reader.uvarint(MAX_ALPHABET))
    return reader.pos


# ---------------------------------------------------------------------------- bits streams


def _runs_to_symbols(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run lengths -> (symbols, escaped run indices, their raw-bit counts).

    v = length - 1; v < 64 is its own symbol; otherwise the symbol is 64 + (bit_length(v) - 7)
    and the bit_length(v) - 1 bits below v's leading one follow as raw bits.
    """
    v = lengths - 1
    symbols = v.astype(np.int32)
    esc = np.flatnonzero(v >= _RUN_DIRECT)
    nbits = _bit_length(v[esc]) - 1
    symbols[esc] = _RUN_DIRECT + nbits - 6
    return symbols, esc, nbits


def _encode_runs(bits: np.ndarray, coder: EntropyCoder) -> bytes:
    n = bits.shape[0]
    starts = np.flatnonzero(bits[1:] != bits[:-1]) + 1
    lengths = np.diff(np.concatenate(([0], starts, [n])))
    del starts
    symbols, esc, nbits = _runs_to_symbols(lengths)
    first = int(bits[0])
    a = encode_ints(symbols[0::2] if first == 0 else symbols[1::2], coder)
    b = encode_ints(symbols[1::2] if first == 0 else symbols[0::2], coder)
    v = lengths[esc] - 1
    offsets = np.concatenate(([0], np.cumsum(nbits)))
    raw = np.zeros(int(offsets[-1]), dtype=np.uint8)
    for j in range(int(nbits.max(initial=0))):
        live = nbits > j
        raw[offsets[:-1][live] + j] = (v[live] >> (nbits[live] - 1 - j)) & 1
    head = bytes([_BITS_RUNS, first]) + uvarint(lengths.shape[0])
    return head + uvarint(len(a)) + a + uvarint(len(b)) + b + np.packbits(raw).tobytes()


def _decode_runs(reader: Reader, count: int, coder: EntropyCoder) -> np.ndarray:
    first = reader.u8()
    n_runs = reader.uvarint(count)
    if first > 1 or n_runs < 1:
        raise reader.fail(f"invalid run header (first={first}, runs={n_runs})")
    n_first, n_second = (n_runs + 1) // 2, n_runs // 2
    n_false, n_true = (n_first, n_second) if first == 0 else (n_second, n_first)
    a = decode_ints(reader.take(reader.uvarint(len(reader.data))), n_false, coder)
    b = decode_ints(reader.take(reader.uvarint(len(reader.data))), n_true, coder)
    symbols = np.empty(n_runs, dtype=np.int64)
    symbols[0::2], symbols[1::2] = (a, b) if first == 0 else (b, a)
    del a, b
    if symbols.min() < 0 or symbols.max() > _RUN_MAX_SYMBOL:
        raise reader.fail("run symbol out of range")
    esc = np.flatnonzero(symbols >= _RUN_DIRECT)
    nbits = symbols[esc] - _RUN_DIRECT + 6
    offsets = np.concatenate(([0], np.cumsum(nbits)))
    packed = reader.rest()
    if len(packed) != (int(offsets[-1]) + 7) // 8:
        expected = (int(offsets[-1]) + 7) // 8
        raise reader.fail(f"expected {expected} bytes of run bits, found {len(packed)}")
    raw = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))
    values = symbols
    high = np.ones(esc.shape[0], dtype=np.int64)
    for j in range(int(nbits.max(initial=0))):
        live = nbits > j
        high[live] = high[live] * 2 + raw[offsets[:-1][live] + j]
    values[esc] = high
    lengths = values + 1
    if int(lengths.sum()) != count:
        raise reader.fail(f"runs cover {int(lengths.sum())} bits, expected {count}")
    run_values = np.zeros(n_runs, dtype=bool)
    run_values[0::2] = bool(first)
    run_values[1::2] = not first
    return np.repeat(run_values, lengths)


def encode_bits(bits: np.ndarray, coder: EntropyCoder) -> bytes:
    """Self-contained stream for a 1-D bool array (a mask map).

    Tries an order-0 model (one 16-bit integer probability) and a run-length model (run lengths
    coded as ints streams, which captures clustered or block-structured masks) and keeps the
    shorter, so it never costs more than order-0 plus the mode byte. All-false / all-true costs
    two bytes.
    """
    bits = np.asarray(bits)
    if bits.ndim != 1 or bits.dtype != np.bool_:
        raise ConfigError(f"encode_bits wants a 1-D bool array, got {bits.dtype} {bits.shape}")
    if bits.shape[0] > MAX_COUNT:
        raise ConfigError(f"encode_bits codes at most {MAX_COUNT} bits, got {bits.shape[0]}")
    n, ones = bits.shape[0], int(np.count_nonzero(bits))
    if ones in (0, n):
        return bytes([_BITS_CONST, int(ones > 0)])
    f1 = min(max((2 * ones * TOTAL_FREQ + n) // (2 * n), 1), TOTAL_FREQ - 1)
    freqs = np.array([TOTAL_FREQ - f1, f1], dtype=np.int64)
    order0 = bytes([_BITS_ORDER0]) + uvarint(f1) + coder.encode(bits.view(np.uint8), freqs)
    runs = _encode_runs(bits, coder)
    return runs if len(runs) < len(order0) else order0


def decode_bits(data: bytes, count: int, coder: EntropyCoder) -> np.ndarray:
    """Inverse of encode_bits: a bool array of length `count`."""
    count = check_count(count, "bits stream")
    reader = Reader(data, "bits stream")
    mode = reader.u8()
    if mode == _BITS_CONST:
        value = reader.u8()
        reader.end()
        if value > 1:
            raise reader.fail(f"constant bit must be 0 or 1, found {value}")
        return np.full(count, bool(value), dtype=bool)
    if mode == _BITS_ORDER0:
        f1 = reader.uvarint(TOTAL_FREQ - 1)
        if f1 < 1:
            raise reader.fail("probability of a set bit must be >= 1/65536")
        freqs = np.array([TOTAL_FREQ - f1, f1], dtype=np.int64)
        return coder.decode(reader.rest(), freqs, count).astype(bool)
    if mode == _BITS_RUNS:
        return _decode_runs(reader, count, coder)
    raise ArchiveError(f"bits stream: unknown mode {mode} (expected 0, 1 or 2)")


# ---------------------------------------------------------------------------- floats streams


def encode_floats(values: np.ndarray) -> bytes:
    """Float32 values stored bit-exactly: mode byte, then raw little-endian float32 or its zstd."""
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype != np.float32:
        raise ConfigError(f"encode_floats wants 1-D float32, got {values.dtype}{values.shape}")
    raw = values.astype("<f4").tobytes()
    packed = _zstd_compress(raw)
    if len(packed) < len(raw):
        return bytes([_FLOAT_ZSTD]) + packed
    return bytes([_FLOAT_RAW]) + raw


def decode_floats(data: bytes, count: int) -> np.ndarray:
    """Inverse of encode_floats: the identical float32 bits, length `count`."""
    count = check_count(count, "floats stream")
    reader = Reader(data, "floats stream")
    mode = reader.u8()
    if mode == _FLOAT_RAW:
        raw = reader.rest()
        if len(raw) != 4 * count:
            raise ArchiveError(f"floats stream: expected {4 * count} bytes, found {len(raw)}")
    elif mode == _FLOAT_ZSTD:
        raw = _zstd_decompress(reader.rest(), 4 * count, "floats stream")
    else:
        raise ArchiveError(f"floats stream: unknown mode {mode} (expected 0 or 1)")
    return np.frombuffer(raw, "<f4").astype(np.float32)


# ---------------------------------------------------------------------------- latents streams


def _context_classes(previous: np.ndarray, clip: int) -> np.ndarray:
    """Context class of every value of a cell from the cell before it: clip(prev, -K, K) + K + 1
    (class 0 is the first cell's, which has no cell before it)."""
    return (np.clip(previous, -clip, clip) + clip + 1).astype(np.int64)


def context_classes(values: np.ndarray, clip: int) -> np.ndarray:
    """The context class of every value of a channel (cells, positions) under clip K: 0 in the
    first cell, `_context_classes` of the cell before elsewhere."""
    classes = np.zeros(values.shape, dtype=np.int64)
    classes[1:] = _context_classes(values[:-1], clip)
    return classes


def _spatial_class(left: np.ndarray, up: np.ndarray, clip: int) -> np.ndarray:
    span = 2 * clip + 1
    return (np.clip(left, -clip, clip) + clip) * span + np.clip(up, -clip, clip) + clip


def spatial_classes(grid: np.ndarray, clip: int) -> np.ndarray:
    """The SPATIAL context class of every value of a channel (cells, height, width): from its left
    and upper neighbours in the same cell, each clipped to -K..K (0 beyond the edge)."""
    left, up = np.zeros_like(grid), np.zeros_like(grid)
    left[..., 1:] = grid[..., :-1]
    up[..., 1:, :] = grid[..., :-1, :]
    return _spatial_class(left, up, clip).astype(np.int64)


def latent_context_splits(
    values: np.ndarray, width: int | None
) -> list[tuple[int, int, np.ndarray]]:
    """(mode, K, the class of every value, shaped like `values`) of each split an encoder tries
    on a channel (cells, positions): temporal with every clip of LATENT_CONTEXT_CLIPS, then, when
    the grid's `width` is given (format 1.4), spatial with every clip of LATENT_SPATIAL_CLIPS."""
    splits = []
    if values.shape[0] > 1:
        for clip in LATENT_CONTEXT_CLIPS:
            splits.append((_LATENT_TEMPORAL, clip, context_classes(values, clip)))
    if width is not None and values.size:
        grid = values.reshape(values.shape[0], -1, width)
        for clip in LATENT_SPATIAL_CLIPS:
            splits.append(
                (_LATENT_SPATIAL, clip, spatial_classes(grid, clip).reshape(values.shape))
            )
    return splits


def _wavefront_order(cells: int, height: int, width: int) -> np.ndarray:
    """Flat indices of a (cells, height, width) grid by anti-diagonal y + x, then cell, then y:
    the order in which a SPATIAL decoder can fill a whole diagonal of every cell at once."""
    cell, y, x = (a.ravel() for a in np.indices((cells, height, width)))
    return np.lexsort((y, cell, y + x))


def _encode_split(
    mode: int, clip: int, values: np.ndarray, classes: np.ndarray, coder: EntropyCoder
) -> bytes:
    """Mode byte, K, then per class: uvarint count, uvarint byte length, its ints stream (the
    class's values in the order given)."""
    out = [bytes([mode, clip])]
    for k in range(_class_count(mode, clip)):
        part = encode_ints(values[classes == k], coder)
        out += [uvarint(int((classes == k).sum())), uvarint(len(part)), part]
    return b"".join(out)


def _class_count(mode: int, clip: int) -> int:
    return 2 * clip + 2 if mode == _LATENT_TEMPORAL else (2 * clip + 1) ** 2


def encode_latents(values: np.ndarray, coder: EntropyCoder, width: int | None = None) -> bytes:
    """Self-contained stream for one channel of a latent grid, integers shaped (cells, positions).

    Neighbouring cells of a grid are frames a few apart, so a value predicts the one at its
    position in the next cell (TEMPORAL: 14-18% off the fine grid of a bunny session,
    benchmarks/results/latent_coding.md); neighbouring positions of a cell are neighbouring
    pixels, so a value's left and upper neighbours predict it too (SPATIAL, format 1.4: given the
    grid's `width`). Small grids do not repay the extra histograms, so the stream keeps the
    shortest of: one plain ints stream, the temporal split with each clip of
    LATENT_CONTEXT_CLIPS, the spatial split with each clip of LATENT_SPATIAL_CLIPS.

    Layout (docs/FORMAT.md, "latents stream"): mode byte; PLAIN: an ints stream of every value,
    row-major. TEMPORAL / SPATIAL: u8 K, then for each class: uvarint count, uvarint byte length,
    an ints stream of that class's values (TEMPORAL in row-major order, SPATIAL in wavefront
    order).
    """
    values = np.asarray(values)
    if values.ndim != 2 or (values.size and not np.issubdtype(values.dtype, np.integer)):
        raise ConfigError(f"encode_latents wants 2-D integers, got {values.dtype}{values.shape}")
    if width is not None and (width < 1 or values.shape[1] % width):
        raise ConfigError(f"width {width} does not divide the {values.shape[1]} positions")
    best = bytes([_LATENT_PLAIN]) + encode_ints(values.ravel(), coder)
    for mode, clip, classes in latent_context_splits(values, width):
        if mode == _LATENT_SPATIAL:  # wavefront order: what a decoder can fill in
            order = _wavefront_order(values.shape[0], values.shape[1] // width, width)
        else:  # row-major
            order = np.arange(values.size)
        candidate = _encode_split(mode, clip, values.ravel()[order], classes.ravel()[order], coder)
        if len(candidate) < len(best):
            best = candidate
    return best


def decode_latents(
    data: bytes, cells: int, positions: int, coder: EntropyCoder, width: int | None = None
) -> np.ndarray:
    """Inverse of encode_latents: int32 values shaped (cells, positions). `width` is the grid's
    (files of format 1.4 and later); without it a SPATIAL stream is refused."""
    count = check_count(cells * positions, "latents stream")
    reader = Reader(data, "latents stream")
    mode = reader.u8()
    if mode == _LATENT_PLAIN:
        return decode_ints(reader.rest(), count, coder).reshape(cells, positions)
    if mode == _LATENT_SPATIAL and width is None:
        raise reader.fail("spatial context coding (mode 2) is defined from format 1.4 on")
    if mode not in (_LATENT_TEMPORAL, _LATENT_SPATIAL):
        raise ArchiveError(f"latents stream: unknown mode {mode} (expected 0, 1 or 2)")
    clip = reader.u8()
    widest = MAX_CONTEXT_CLIP if mode == _LATENT_TEMPORAL else MAX_SPATIAL_CLIP
    if not 1 <= clip <= widest:
        raise reader.fail(f"context clip must be 1..{widest}, found {clip}")
    parts, total = [], 0
    for _ in range(_class_count(mode, clip)):
        n = reader.uvarint(count)
        total += n
        if total > count:
            raise reader.fail(f"context classes hold more than the {count} values of the grid")
        parts.append(decode_ints(reader.take(reader.uvarint(len(data))), n, coder))
    reader.end()
    if total != count:
        raise reader.fail(f"context classes hold {total} values, the grid has {count}")
    if mode == _LATENT_TEMPORAL:
        return _fill_temporal(parts, clip, cells, positions, reader)
    if width < 1 or positions % width:
        raise reader.fail(f"a grid of {positions} positions cannot be {width} wide")
    grid = _fill_spatial(parts, clip, (cells, positions // width, width), reader)
    return grid.reshape(cells, positions)


def _fill_temporal(
    parts: list[np.ndarray], clip: int, cells: int, positions: int, reader: Reader
) -> np.ndarray:
    out = np.empty((cells, positions), dtype=np.int32)
    taken = np.zeros(len(parts), dtype=np.int64)
    for cell in range(cells):
        if cell == 0:
            classes = np.zeros(positions, dtype=np.int64)
        else:
            classes = _context_classes(out[cell - 1], clip)
        for k in np.unique(classes):
            where = classes == k
            n = int(where.sum())
            if taken[k] + n > parts[k].shape[0]:
                raise reader.fail(f"context class {k} holds fewer values than the grid reads")
            out[cell, where] = parts[k][taken[k] : taken[k] + n]
            taken[k] += n
    return out


def _fill_spatial(
    parts: list[np.ndarray], clip: int, shape: tuple[int, int, int], reader: Reader
) -> np.ndarray:
    """Fill the grid diagonal by diagonal (every cell at once): a diagonal's classes depend only
    on the diagonal before it, and its values are the next ones of each class's stream."""
    cells, height, width = shape
    padded = np.zeros((cells, height + 1, width + 1), dtype=np.int32)  # zero row and column
    sizes = np.array([p.shape[0] for p in parts], dtype=np.int64)
    pool = np.concatenate(parts)  # every mode has at least 9 classes
    taken = np.cumsum(sizes) - sizes  # next unread value of each class, in `pool`
    ends = taken + sizes
    for diagonal in range(height + width - 1):
        ys = np.arange(max(0, diagonal - width + 1), min(height - 1, diagonal) + 1)
        xs = diagonal - ys
        classes = _spatial_class(padded[:, ys + 1, xs], padded[:, ys, xs + 1], clip).ravel()
        counts = np.bincount(classes, minlength=len(parts))
        if np.any(taken + counts > ends):
            raise reader.fail("a context class holds fewer values than the grid reads")
        order = np.argsort(classes, kind="stable")
        rank = np.arange(classes.size) - np.repeat(np.cumsum(counts) - counts, counts)
        values = np.empty(classes.size, dtype=np.int32)
        values[order] = pool[np.repeat(taken, counts) + rank]
        padded[:, ys + 1, xs + 1] = values.reshape(cells, ys.size)
        taken += counts
    return padded[:, 1:, 1:]
