"""The two entropy coders behind one interface; the archive header names the one that wrote it.

Both code i.i.d. symbols under an integer frequency table summing to 2**PRECISION_BITS:
- constriction (the default: prebuilt wheels, MIT/Apache, an ANS coder with shared categorical
  models);
- torchac (an arithmetic coder; GPL, compiles C++ at first import and prints while doing so, wants a
  CDF row per symbol): imported lazily, only when chosen, with its noise kept off our stdout, and fed
  in chunks so memory stays bounded.

Determinism: every probability the decoder uses comes from integers stored in the stream.
constriction's Categorical model only takes floats, so it is fed `freqs / 2**16` as float64 with
perfect=False. Its fast quantizer then computes, in f64, cdf_i = floor(C_i * (2**24 - n) / 2**16)
+ i, where C_i is our integer cumulative frequency and n the alphabet size. Our inputs are dyadic
and every intermediate is an integer multiple of 2**-16 below 2**41, so every f64 operation is
exact: nothing is ever rounded, and every CPU derives the same 24-bit integer table from the
stored integers. tests/test_entropy.py probes constriction's decoder at every interval edge to
check that the installed version computes exactly this table.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Any, Protocol

import numpy as np

from .byteio import Reader, uvarint
from .errors import ArchiveError, ConfigError

PRECISION_BITS = 16
TOTAL_FREQ = 1 << PRECISION_BITS
CODERS: tuple[str, ...] = ("constriction", "torchac")
DEFAULT_CODER = "constriction"

MAX_COUNT = 1 << 28  # most symbols one stream may hold (decoders refuse larger counts)
MAX_CODER_ALPHABET = 1 << 15  # torchac codes int16 symbols
_CHUNK = 1 << 20  # symbols mapped at a time, to bound temporary memory

_ANS_PRECISION = 24  # constriction's fixed-point precision (DefaultAnsCoder)


class EntropyCoder(Protocol):
    """Codes i.i.d. symbols under an integer frequency table summing to 2**PRECISION_BITS."""

    name: str

    def encode(self, symbols: np.ndarray, freqs: np.ndarray) -> bytes: ...

    def decode(self, data: bytes, freqs: np.ndarray, count: int) -> np.ndarray: ...


# ---------------------------------------------------------------------------- shared checks


def check_count(count: int, where: str) -> int:
    if isinstance(count, bool) or not isinstance(count, int | np.integer):
        raise ArchiveError(f"{where}: symbol count must be an integer, got {count!r}")
    if not 0 <= count <= MAX_COUNT:
        raise ArchiveError(f"{where}: symbol count must be in 0..{MAX_COUNT}, got {count}")
    return int(count)


def _compact_model(freqs: np.ndarray, error: type[Exception]) -> tuple[np.ndarray, np.ndarray]:
    """Validate a frequency table; return (used symbols, their freqs), dropping zero entries.

    Coding only the used symbols keeps every coded interval non-empty, which torchac's decoder
    needs (its binary search can land on a zero-width symbol).
    """
    freqs = np.asarray(freqs)
    if freqs.ndim != 1 or not 1 <= freqs.shape[0] <= MAX_CODER_ALPHABET:
        raise error(
            f"frequency table must be 1-D with 1..{MAX_CODER_ALPHABET} entries, got {freqs.shape}"
        )
    if not np.issubdtype(freqs.dtype, np.integer):
        raise error(f"frequencies must be integers, got dtype {freqs.dtype}")
    freqs = freqs.astype(np.int64)
    if freqs.min() < 0 or int(freqs.sum()) != TOTAL_FREQ:
        raise error(f"frequencies must be >= 0 and sum to {TOTAL_FREQ}, sum is {int(freqs.sum())}")
    used = np.flatnonzero(freqs)
    return used, freqs[used]


def _symbol_chunks(symbols: np.ndarray, freqs_len: int, used: np.ndarray):
    """Yield (start, compact indices int32) per chunk, checking each symbol has a frequency."""
    symbols = np.asarray(symbols)
    if symbols.ndim != 1 or (symbols.size and not np.issubdtype(symbols.dtype, np.integer)):
        raise ConfigError(
            f"symbols must be a 1-D integer array, got {symbols.dtype}{symbols.shape}"
        )
    lut = np.full(freqs_len, -1, dtype=np.int32)
    lut[used] = np.arange(used.shape[0], dtype=np.int32)
    for start in range(0, symbols.shape[0], _CHUNK):
        part = symbols[start : start + _CHUNK]
        if part.min() < 0 or part.max() >= freqs_len:
            raise ConfigError(
                f"symbols must lie in [0, {freqs_len}), found {part.min()}..{part.max()}"
            )
        idx = lut[part]
        if idx.min() < 0:
            raise ConfigError("a symbol to encode has frequency 0")
        yield start, idx


# ---------------------------------------------------------------------------- coders


class ConstrictionCoder:
    """ANS (constriction's AnsCoder) with a categorical model built exactly from integers."""

    name = "constriction"

    def _model(self, f: np.ndarray) -> Any:
        import constriction

        probabilities = f.astype(np.float64) / TOTAL_FREQ  # dyadic: exact, see module docstring
        return constriction.stream.model.Categorical(probabilities, perfect=False)

    def encode(self, symbols: np.ndarray, freqs: np.ndarray) -> bytes:
        import constriction

        used, f = _compact_model(freqs, ConfigError)
        chunks = list(_symbol_chunks(symbols, len(freqs), used))
        if used.shape[0] == 1 or not chunks:
            return b""
        model = self._model(f)
        coder = constriction.stream.stack.AnsCoder()
        for _, idx in reversed(chunks):  # ANS is a stack: push the last chunk first
            coder.encode_reverse(idx, model)
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, freqs: np.ndarray, count: int) -> np.ndarray:
        import constriction

        count = check_count(count, "constriction payload")
        used, f = _compact_model(freqs, ArchiveError)
        if count == 0 or used.shape[0] == 1:
            if data:
                raise ArchiveError(f"constriction payload: expected 0 bytes, found {len(data)}")
            return np.full(count, used[0], dtype=np.int32)
        if len(data) == 0 or len(data) % 4:
            raise ArchiveError(
                f"constriction payload: expected a non-empty multiple of 4 bytes, found {len(data)}"
            )
        out = np.empty(count, dtype=np.int32)
        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, "<u4").astype(np.uint32))
            model = self._model(f)
            for start in range(0, count, _CHUNK):
                n = min(_CHUNK, count - start)
                out[start : start + n] = used[coder.decode(model, n)]
            empty = coder.is_empty()
        except Exception as exc:  # constriction raises assorted errors on garbage
            raise ArchiveError(f"constriction payload is corrupt ({exc})") from None
        if not empty:
            raise ArchiveError("constriction payload is corrupt (data left after the last symbol)")
        return out


_TORCHAC: Any = None


def _import_torchac() -> Any:
    """Import torchac (it compiles C++ with ninja the first time) with its output silenced."""
    global _TORCHAC
    if _TORCHAC is not None:
        return _TORCHAC
    with tempfile.TemporaryFile(mode="w+b") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            with contextlib.redirect_stdout(sys.stderr):
                import torchac  # noqa: PLC0415
        except Exception as exc:
            log.seek(0)
            tail = log.read()[-300:].decode("utf-8", "replace").replace("\n", " ")
            raise ConfigError(f"torchac coder unavailable ({exc}); build output: {tail}") from None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    _TORCHAC = torchac
    return torchac


class TorchacCoder:
    """torchac's arithmetic coder; it wants one int16 CDF row per symbol, so it codes in chunks.

    Payload: uvarint chunk_symbols, then per chunk uvarint(byte length) + torchac bytes.
    """

    name = "torchac"

    @staticmethod
    def _cdf_row(f: np.ndarray) -> np.ndarray:
        cdf = np.zeros(f.shape[0] + 1, dtype=np.int64)  # last entry unused (torchac assumes 2**16)
        cdf[1:-1] = np.cumsum(f)[:-1]
        return cdf.astype(np.uint16).view(np.int16)

    @staticmethod
    def _chunk_symbols(n_used: int) -> int:
        return max(1, min(1 << 16, (1 << 23) // (n_used + 1)))  # CDF block <= 16 MiB

    def encode(self, symbols: np.ndarray, freqs: np.ndarray) -> bytes:
        used, f = _compact_model(freqs, ConfigError)
        chunks = list(_symbol_chunks(symbols, len(freqs), used))
        if used.shape[0] == 1 or not chunks:
            return b""
        torch = __import__("torch")
        torchac = _import_torchac()
        row = self._cdf_row(f)
        step = self._chunk_symbols(used.shape[0])
        out = [uvarint(step)]
        for _, idx in chunks:
            for s in range(0, idx.shape[0], step):
                part = idx[s : s + step].astype(np.int16)
                cdf = torch.from_numpy(np.broadcast_to(row, (part.shape[0], row.shape[0])).copy())
                data = torchac.encode_int16_normalized_cdf(cdf, torch.from_numpy(part))
                out += [uvarint(len(data)), data]
        return b"".join(out)

    def decode(self, data: bytes, freqs: np.ndarray, count: int) -> np.ndarray:
        count = check_count(count, "torchac payload")
        used, f = _compact_model(freqs, ArchiveError)
        if count == 0 or used.shape[0] == 1:
            if data:
                raise ArchiveError(f"torchac payload: expected 0 bytes, found {len(data)}")
            return np.full(count, used[0], dtype=np.int32)
        torch = __import__("torch")
        torchac = _import_torchac()
        reader = Reader(data, "torchac payload")
        step = reader.uvarint(1 << 16)
        if step < 1:
            raise ArchiveError("torchac payload: chunk size must be >= 1, found 0")
        row = self._cdf_row(f)
        out = np.empty(count, dtype=np.int32)
        for start in range(0, count, step):
            n = min(step, count - start)
            chunk = reader.take(reader.uvarint(len(data)))
            cdf = torch.from_numpy(np.broadcast_to(row, (n, row.shape[0])).copy())
            try:
                sym = torchac.decode_int16_normalized_cdf(cdf, chunk).numpy()
            except Exception as exc:
                raise ArchiveError(f"torchac payload is corrupt ({exc})") from None
            out[start : start + n] = used[sym.astype(np.int64)]
        reader.end()
        return out


def get_coder(name: str) -> EntropyCoder:
    """The coder recorded under `name` in an archive header."""
    if name == "constriction":
        return ConstrictionCoder()
    if name == "torchac":
        return TorchacCoder()
    raise ConfigError(f"unknown entropy coder {name!r}; valid coders: {', '.join(CODERS)}")
