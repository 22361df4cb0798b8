"""The `.pfnr` container: magic, version, CRC-checked chunks, atomic appends (docs/FORMAT.md).

Layout: MAGIC, major and minor version bytes, then chunks. A chunk is a 4-byte ASCII type, a u64
little-endian payload length, the payload and a CRC32 (u32 LE) of type + length + payload. Chunks
come in order HEAD (zstd JSON), SESS* (one per session), END (session count and file length), so
a file cut at a chunk boundary is still detected. The reader trusts no length before checking it
against the bytes actually there, and never unpickles or evaluates anything.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from .byteio import Reader, zstd_decompress
from .errors import ArchiveError, ConfigError

MAGIC = b"\x89PFNR\r\n\x1a\n"
FORMAT_VERSION: tuple[int, int] = (1, 6)
FORMAT_KEY = "format_version"  # (1.2) the header's copy of the version bytes of the file it created
PREAMBLE_BYTES = len(MAGIC) + 2

CHUNK_HEADER = b"HEAD"
CHUNK_SESSION = b"SESS"
CHUNK_END = b"END "
FRAMING_BYTES = 4 + 8 + 4  # type, length, CRC32
END_PAYLOAD_BYTES = 4 + 8  # session count (u32), file length (u64)

MAX_JSON_BYTES = 16 << 20  # decompressed header or session meta
MAX_SESSIONS = 1 << 16
MAX_STREAMS = 1 << 16  # per session
MAX_NAME_BYTES = 255
MAX_TABLE = 4 + MAX_STREAMS * (1 + MAX_NAME_BYTES + 8)  # a session's stream table, unpacked
PACKED_TABLE_VERSION = (1, 2)  # the first format version whose stream tables are zstd frames


@dataclass
class SessionChunk:
    """One session: JSON metadata and ordered named byte streams."""

    meta: dict[str, Any]
    streams: dict[str, bytes]


@dataclass
class ArchiveContents:
    """A parsed archive and where its bytes go (for bits-per-pixel accounting)."""

    header: dict[str, Any]
    sessions: list[SessionChunk]
    file_bytes: int
    header_bytes: int  # magic + version + HEAD chunk + END chunk (+ any ancillary chunks)
    session_bytes: list[int]  # each SESS chunk including its 16 bytes of framing
    version: tuple[int, int] = FORMAT_VERSION  # the file's own (major, minor)


# ---------------------------------------------------------------------------- writing


def _json_to_bytes(obj: dict[str, Any], what: str) -> bytes:
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} must be a dict, got {type(obj).__name__}")
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON-serialisable: {exc}") from None
    raw = text.encode("utf-8")
    if len(raw) > MAX_JSON_BYTES:
        raise ConfigError(f"{what} is {len(raw)} bytes of JSON, the limit is {MAX_JSON_BYTES}")
    return zstandard.ZstdCompressor(level=19, write_content_size=True).compress(raw)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    head = kind + struct.pack("<Q", len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))


def _check_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise ConfigError(f"stream names must be str, got {type(name).__name__}")
    raw = name.encode("ascii", "replace")
    if not 1 <= len(raw) <= MAX_NAME_BYTES or not all(0x21 <= c <= 0x7E for c in raw):
        raise ConfigError(
            f"stream name {name!r} must be 1..{MAX_NAME_BYTES} printable ASCII characters"
        )
    return raw


def session_to_bytes(session: SessionChunk, version: tuple[int, int] = FORMAT_VERSION) -> bytes:
    """SESS payload: u32 meta length, zstd JSON meta, the stream table (u32 stream count, then
    per stream a u8 name length, the name and a u64 data length), then the data. From format 1.2
    the table is one zstd frame after its u32 length: the names repeat (a kilobyte a session)."""
    meta = _json_to_bytes(session.meta, "session meta")
    if len(session.streams) > MAX_STREAMS:
        raise ConfigError(f"a session holds at most {MAX_STREAMS} streams")
    table, blobs = [struct.pack("<I", len(session.streams))], []
    for name, data in session.streams.items():
        raw = _check_name(name)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ConfigError(f"stream {name!r} must be bytes, got {type(data).__name__}")
        table.append(bytes([len(raw)]) + raw + struct.pack("<Q", len(data)))
        blobs.append(bytes(data))
    packed = b"".join(table)
    if version >= PACKED_TABLE_VERSION:
        packed = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(packed)
        packed = struct.pack("<I", len(packed)) + packed
    return b"".join([struct.pack("<I", len(meta)), meta, packed, *blobs])


def _end_chunk(sessions: int, body_bytes: int) -> bytes:
    total = body_bytes + FRAMING_BYTES + END_PAYLOAD_BYTES
    return _chunk(CHUNK_END, struct.pack("<IQ", sessions, total))


def _stamped(header: dict[str, Any]) -> dict[str, Any]:
    """`header` with the format version a new file gets: the version bytes are outside every
    CRC, so the header (inside one) repeats them and a flipped version byte is caught."""
    if not isinstance(header, dict) or FORMAT_KEY in header:  # _json_to_bytes refuses a non-dict
        return header
    return {**header, FORMAT_KEY: list(FORMAT_VERSION)}


def archive_to_bytes(header: dict[str, Any], sessions: list[SessionChunk]) -> bytes:
    """The complete file for `header` and `sessions`."""
    if len(sessions) > MAX_SESSIONS:
        raise ConfigError(f"an archive holds at most {MAX_SESSIONS} sessions")
    head = _json_to_bytes(_stamped(header), "header")
    body = [MAGIC, bytes(FORMAT_VERSION), _chunk(CHUNK_HEADER, head)]
    body += [_chunk(CHUNK_SESSION, session_to_bytes(s)) for s in sessions]
    data = b"".join(body)
    return data + _end_chunk(len(sessions), len(data))


# ---------------------------------------------------------------------------- reading


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _json_from_bytes(data: bytes, where: str) -> dict[str, Any]:
    """A zstd JSON block (docs/FORMAT.md): at most MAX_JSON_BYTES, strict JSON, an object."""
    raw = zstd_decompress(data, where, limit=MAX_JSON_BYTES)
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_keys
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArchiveError(f"{where}: invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ArchiveError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def session_from_bytes(
    payload: bytes, where: str, version: tuple[int, int] = FORMAT_VERSION
) -> SessionChunk:
    """Inverse of session_to_bytes for a file of format `version`; `where` names the chunk in
    error messages."""
    reader = Reader(payload, where)
    meta = _json_from_bytes(reader.take(reader.u32()), f"{where} meta")
    table = reader
    if version >= PACKED_TABLE_VERSION:
        raw = zstd_decompress(reader.take(reader.u32()), f"{where} stream table", limit=MAX_TABLE)
        table = Reader(raw, f"{where} stream table")
    n_streams = table.u32()
    if n_streams > MAX_STREAMS:
        raise ArchiveError(f"{where}: {n_streams} streams exceed the limit {MAX_STREAMS}")
    sizes = []
    for i in range(n_streams):
        raw_name = table.take(table.u8())
        if not raw_name or not all(0x21 <= c <= 0x7E for c in raw_name):
            raise ArchiveError(f"{where}: stream {i} has an invalid name {raw_name!r}")
        sizes.append((raw_name.decode("ascii"), table.u64()))
    if table is not reader:
        table.end()
    streams: dict[str, bytes] = {}
    for name, size in sizes:
        if name in streams:
            raise ArchiveError(f"{where}: stream {name!r} appears twice")
        streams[name] = reader.take(size)
    reader.end()
    return SessionChunk(meta, streams)


def _check_preamble(data: bytes, source: str) -> None:
    if len(data) < PREAMBLE_BYTES or data[: len(MAGIC)] != MAGIC:
        what = "an empty file" if not data else f"{len(data)} bytes without the pfnr magic"
        raise ArchiveError(f"{source} is not a pfnr archive (found {what})")
    major, minor = data[len(MAGIC)], data[len(MAGIC) + 1]
    ours = ".".join(map(str, FORMAT_VERSION))
    if (major, minor) > FORMAT_VERSION:
        raise ArchiveError(
            f"{source} was written by a newer pfnr (format version {major}.{minor}, "
            f"this reader supports {FORMAT_VERSION[0]}.x up to {ours}); upgrade pfnr"
        )
    if major != FORMAT_VERSION[0]:
        raise ArchiveError(f"{source} has format version {major}.{minor}; this reader needs {ours}")


def archive_from_bytes(data: bytes, source: str = "archive") -> ArchiveContents:
    """Parse a whole file; every defect is an ArchiveError naming `source` and the offset."""
    _check_preamble(data, source)
    version = (data[len(MAGIC)], data[len(MAGIC) + 1])
    pos, header, end = PREAMBLE_BYTES, None, None
    sessions: list[SessionChunk] = []
    session_bytes: list[int] = []
    while end is None:
        if len(data) - pos < FRAMING_BYTES:
            raise ArchiveError(
                f"{source} is truncated: {len(data) - pos} bytes at offset {pos} where a chunk "
                f"should start (file ends before the END chunk, after {len(sessions)} sessions)"
            )
        kind = data[pos : pos + 4]
        (size,) = struct.unpack("<Q", data[pos + 4 : pos + 12])
        label = f"{source}: chunk {kind!r} at offset {pos}"
        if size > len(data) - pos - FRAMING_BYTES:
            raise ArchiveError(
                f"{label} announces {size} bytes, only {len(data) - pos - FRAMING_BYTES} follow "
                "(truncated or corrupt)"
            )
        payload = data[pos + 12 : pos + 12 + size]
        (crc,) = struct.unpack("<I", data[pos + 12 + size : pos + FRAMING_BYTES + size])
        if crc != zlib.crc32(data[pos : pos + 12 + size]):
            raise ArchiveError(f"{label} fails its CRC32 check (corrupt)")
        chunk_bytes = FRAMING_BYTES + size
        if header is None and kind != CHUNK_HEADER:
            raise ArchiveError(f"{label}: expected the HEAD chunk first")
        if kind == CHUNK_HEADER:
            if header is not None:
                raise ArchiveError(f"{label}: second HEAD chunk")
            header = _json_from_bytes(payload, f"{source} header")
            stamped = header.get(FORMAT_KEY, list(version))
            if stamped != list(version):  # before anything is read as that version defines it
                raise ArchiveError(
                    f"{source}: version bytes {version[0]}.{version[1]} differ from the "
                    f"header's format {stamped!r} (corrupt)"
                )
            head_bytes = PREAMBLE_BYTES + chunk_bytes
        elif kind == CHUNK_SESSION:
            if len(sessions) >= MAX_SESSIONS:
                raise ArchiveError(f"{label}: more than {MAX_SESSIONS} sessions")
            where = f"{source} session {len(sessions) + 1}"
            sessions.append(session_from_bytes(payload, where, version))
            session_bytes.append(chunk_bytes)
        elif kind == CHUNK_END:
            if size != END_PAYLOAD_BYTES:
                raise ArchiveError(f"{label}: END payload must be {END_PAYLOAD_BYTES} bytes")
            end = struct.unpack("<IQ", payload)
            head_bytes += chunk_bytes
        elif 0x61 <= kind[0] <= 0x7A:  # ancillary chunk (lowercase first letter): skip it
            head_bytes += chunk_bytes
        else:
            raise ArchiveError(f"{label}: unknown critical chunk type")
        pos += chunk_bytes
    if pos != len(data):
        raise ArchiveError(f"{source}: {len(data) - pos} unexpected bytes after the END chunk")
    if end != (len(sessions), len(data)):
        raise ArchiveError(
            f"{source}: END chunk records {end[0]} sessions and {end[1]} bytes, "
            f"file has {len(sessions)} sessions and {len(data)} bytes"
        )
    assert header is not None
    return ArchiveContents(header, sessions, len(data), head_bytes, session_bytes, version)


def read_archive(path: Path) -> ArchiveContents:
    """Read and fully validate the archive at `path`."""
    path = Path(path)
    return archive_from_bytes(_read_file(path), str(path))


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ArchiveError(f"archive {path} does not exist") from None
    except OSError as exc:
        raise ArchiveError(f"cannot read archive {path}: {exc.strerror or exc}") from None


def session_stream_bytes(session: SessionChunk) -> dict[str, int]:
    """Payload bytes of each stream (the chunk adds 10 + len(name) bytes per stream of framing)."""
    return {name: len(data) for name, data in session.streams.items()}


# ---------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_temps(target: Path) -> None:
    """Delete temp files beside `target` left by writers that were killed (their pid is gone).
    Writers hold the archive lock, so no live writer's temp file is touched."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        pid = stale.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with suppress(OSError):
                stale.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is not ours to signal
        return True
    return True


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, rename it over `path`, fsync the dir.

    A symlinked `path` keeps its link: the file it points to is replaced.
    Until the rename the old file is untouched; after it, the new one is complete. On any failure
    (including KeyboardInterrupt) the temp file is removed; after kill -9 it may remain, named
    `.<name>.<pid>.<random>.tmp`, is never read, and the next write removes it.
    """
    target = path.resolve()  # through a symlink: replace the file it names, not the link
    _remove_stale_temps(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                raise ArchiveError(f"no space left writing {path}; archive unchanged") from None
            reason = exc.strerror or str(exc)
            raise ArchiveError(f"cannot write {path}: {reason}; archive unchanged") from None
        raise
    _fsync_dir(target.parent)


def write_archive(path: Path, header: dict[str, Any], sessions: list[SessionChunk]) -> None:
    """Write a whole archive atomically (replacing any file at `path`)."""
    _atomic_write(Path(path), archive_to_bytes(header, sessions))


def _canonical(header: dict[str, Any]) -> str:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False)


def append_session(
    path: Path, header: dict[str, Any], session: SessionChunk, expected_sessions: int
) -> ArchiveContents:
    """Append `session` atomically, creating the archive with `header` when it is missing.

    An existing archive must still hold `expected_sessions` sessions and the same header (another
    writer may have changed it since it was read). Existing chunks are copied byte for byte; only
    the END chunk is rewritten. Returns the re-read contents.
    """
    path = Path(path)
    head = _json_to_bytes(_stamped(header), "header")  # validates `header` in both branches
    if not path.exists():
        if expected_sessions != 0:
            raise ArchiveError(
                f"archive {path} disappeared: expected {expected_sessions} sessions in it"
            )
        sessions, version = 0, FORMAT_VERSION
        body = MAGIC + bytes(FORMAT_VERSION) + _chunk(CHUNK_HEADER, head)
    else:
        data = _read_file(path)
        old = archive_from_bytes(data, str(path))
        if len(old.sessions) != expected_sessions:
            raise ArchiveError(
                f"archive {path} changed while encoding: expected {expected_sessions} sessions, "
                f"found {len(old.sessions)} (another pfnr process wrote it?)"
            )
        if FORMAT_KEY in old.header and FORMAT_KEY not in header:  # the stamp a writer added
            header = {**header, FORMAT_KEY: old.header[FORMAT_KEY]}
        if _canonical(old.header) != _canonical(header):
            raise ArchiveError(f"archive {path} has a different header than the one encoded for")
        sessions, version = len(old.sessions), old.version
        body = data[: len(data) - FRAMING_BYTES - END_PAYLOAD_BYTES]
    body += _chunk(CHUNK_SESSION, session_to_bytes(session, version))  # as the file's version
    _atomic_write(path, body + _end_chunk(sessions + 1, len(body)))
    return read_archive(path)


# ---------------------------------------------------------------------------- locking


def lock_path_of(path: Path) -> Path:
    """The lock file of the archive at `path`: beside the file a symlinked `path` points to, so
    every name of one archive takes the same lock."""
    real = Path(path).resolve()
    return real.with_name(real.name + ".lock")


def _open_lock(lock_path: Path) -> int:
    """Open (creating) the lock file without following a symlink, and only a regular file."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock_path, flags | os.O_NONBLOCK, 0o644)  # a FIFO must not block the open
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ArchiveError(
                f"lock file {lock_path} is a symlink; refusing to follow it"
            ) from None
        raise ArchiveError(f"cannot create lock file {lock_path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ArchiveError(f"lock file {lock_path} exists and is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def archive_lock(path: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive flock on '<archive>.lock' for a whole read-train-append cycle.

    A second process waits up to `wait` seconds, then gets an ArchiveError naming the holder's pid.
    The kernel drops the lock when the holder exits or dies. The lock file itself is left in
    place: deleting it would let two processes lock two different files. The lock belongs to the
    archive's resolved path (`lock_path_of`), is never a symlink and always a regular file.
    """
    path = Path(path)
    lock_path = lock_path_of(path)
    fd = _open_lock(lock_path)
    try:
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                    raise ArchiveError(
                        f"archive {path} is locked by another pfnr process (pid {holder})"
                    ) from None
                time.sleep(min(0.05, left))
        try:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            except OSError as exc:
                reason = "no space left" if exc.errno == errno.ENOSPC else exc.strerror or exc
                raise ArchiveError(f"cannot write lock file {lock_path}: {reason}") from None
            yield
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
