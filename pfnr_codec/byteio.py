"""Byte-level helpers shared by the container, the coders and the stream formats: LEB128 varints,
zigzag, a bounded reader whose every failure is an ArchiveError naming what was being read, and the
one zstd decompressor every reader goes through."""

from __future__ import annotations

import zstandard

from .errors import ArchiveError


def uvarint(value: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def unzigzag(value: int) -> int:
    return value >> 1 if value % 2 == 0 else -((value + 1) >> 1)


class Reader:
    """Bounds-checked cursor over a stream; every failure is an ArchiveError naming the offset."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = memoryview(bytes(data))
        self.pos = 0
        self.where = where

    def fail(self, what: str) -> ArchiveError:
        return ArchiveError(f"{self.where}: {what} at byte {self.pos} of {len(self.data)}")

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of stream")
        self.pos += 1
        return self.data[self.pos - 1]

    def u32(self) -> int:
        """Little-endian unsigned 32-bit integer."""
        return int.from_bytes(self.take(4), "little")

    def u64(self) -> int:
        """Little-endian unsigned 64-bit integer."""
        return int.from_bytes(self.take(8), "little")

    def uvarint(self, limit: int) -> int:
        value, shift = 0, 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            shift += 7
            if value > limit:
                raise self.fail(f"value {value} exceeds the limit {limit}")
            if not byte & 0x80:
                return value
            if shift > 63:
                raise self.fail("varint longer than 9 bytes")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail(f"{n} bytes announced, {len(self.data) - self.pos} left")
        self.pos += n
        return bytes(self.data[self.pos - n : self.pos])

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} unexpected trailing bytes")


def zstd_decompress(data: bytes, where: str, *, limit: int, size: int | None = None) -> bytes:
    """The content of one zstd frame from an archive, never more than `limit` bytes of output.

    The frame MUST declare its content size (docs/FORMAT.md), at most `limit` and, when `size` is
    given, exactly `size`, and nothing may follow it. The output buffer is allocated from the
    declared size, and zstd stops with an error when the frame would write past it: a frame that
    declares 16 MiB but holds 2 GiB is refused after at most 16 MiB, not after 2 GiB.
    """
    try:
        declared = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as exc:
        raise ArchiveError(f"{where}: corrupt zstd data ({exc})") from None
    if declared == zstandard.CONTENTSIZE_UNKNOWN:
        raise ArchiveError(f"{where}: zstd frame does not declare its content size")
    if declared > limit:
        raise ArchiveError(
            f"{where}: zstd frame declares {declared} bytes, which exceeds the limit {limit}"
        )
    if size is not None and declared != size:
        raise ArchiveError(f"{where}: zstd frame declares {declared} bytes, expected {size}")
    if declared == 0:  # python-zstandard treats a declared 0 as "unknown" and would not bound it
        empty = zstandard.ZstdCompressor(write_content_size=True).compress(b"")
        if bytes(data) != empty:
            raise ArchiveError(f"{where}: zstd frame declares 0 bytes but holds more")
        return b""
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            data, max_output_size=declared, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise ArchiveError(f"{where}: corrupt zstd data or not what it declares ({exc})") from None
    if len(raw) != declared:  # zstd checks this itself; kept as a second line of defence
        raise ArchiveError(f"{where}: zstd frame holds {len(raw)} bytes, declares {declared}")
    return raw
