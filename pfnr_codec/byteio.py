"""Byte-level helpers shared by the coders and the stream formats: LEB128 varints, zigzag, and
a bounded reader whose every failure is an ArchiveError naming what was being read."""

from __future__ import annotations

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
