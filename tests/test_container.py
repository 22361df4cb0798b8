"""The .pfnr container: round trips, corruption and truncation, bounded reads, crash-safe appends,
locking."""

import errno
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard

from pfnr_codec import container
from pfnr_codec.container import (
    FORMAT_VERSION,
    MAGIC,
    SessionChunk,
    append_session,
    archive_from_bytes,
    archive_lock,
    archive_to_bytes,
    read_archive,
    session_stream_bytes,
    write_archive,
)
from pfnr_codec.errors import ArchiveError, ConfigError

HEADER = {"format": "pfnr", "model": {"channels": [32, 16], "fso": True}, "coder": "constriction"}
STAMPED = {**HEADER, "format_version": list(FORMAT_VERSION)}  # as a new file holds it


def _sessions(seed: int = 0, big: int = 0) -> list[SessionChunk]:
    rng = np.random.default_rng(seed)
    return [
        SessionChunk(
            {"name": f"clip{i}", "frames": 12 + i, "fps": 25.0, "size": [144, 176]},
            {
                "w/blocks.0.conv/codes": rng.bytes(40 + 13 * i),
                "w/blocks.0.conv/claim": rng.bytes(9),
                "w/empty": b"",
                "head/weight": rng.bytes(24 + big),
            },
        )
        for i in range(2)
    ]


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_and_byte_accounting(tmp_path: Path) -> None:
    path = tmp_path / "a.pfnr"
    sessions = _sessions()
    write_archive(path, HEADER, sessions)
    got = read_archive(path)
    assert got.header == STAMPED
    assert [s.meta for s in got.sessions] == [s.meta for s in sessions]
    assert [list(s.streams.items()) for s in got.sessions] == [
        list(s.streams.items()) for s in sessions
    ]
    assert got.file_bytes == path.stat().st_size
    assert got.header_bytes + sum(got.session_bytes) == got.file_bytes
    assert session_stream_bytes(got.sessions[1]) == {
        k: len(v) for k, v in sessions[1].streams.items()
    }
    assert path.read_bytes()[: len(MAGIC) + 2] == MAGIC + bytes(FORMAT_VERSION)


def test_append_keeps_old_chunks_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "a.pfnr"
    first, second = _sessions()
    one = append_session(path, HEADER, first, 0)
    assert len(one.sessions) == 1 and one.header == STAMPED
    old = path.read_bytes()
    two = append_session(path, json.loads(json.dumps(HEADER)), second, 1)
    new = path.read_bytes()
    end = container.FRAMING_BYTES + container.END_PAYLOAD_BYTES
    assert new[: len(old) - end] == old[: len(old) - end]
    assert two.session_bytes[0] == one.session_bytes[0]
    assert two.sessions[1].streams == second.streams
    assert new == archive_to_bytes(HEADER, [first, second])
    assert _listing(tmp_path) == ["a.pfnr"]


def test_append_refuses_a_changed_archive(tmp_path: Path) -> None:
    path = tmp_path / "a.pfnr"
    first, second = _sessions()
    append_session(path, HEADER, first, 0)
    before = path.read_bytes()
    with pytest.raises(ArchiveError, match="expected 0 sessions, found 1"):
        append_session(path, HEADER, second, 0)
    with pytest.raises(ArchiveError, match="different header"):
        append_session(path, {**HEADER, "coder": "torchac"}, second, 1)
    with pytest.raises(ArchiveError, match="disappeared"):
        append_session(tmp_path / "gone.pfnr", HEADER, second, 1)
    with pytest.raises(ConfigError):
        append_session(path, {"x": float("nan")}, second, 1)
    with pytest.raises(ConfigError):
        append_session(path, HEADER, SessionChunk({}, {"bad name": b""}), 1)
    assert path.read_bytes() == before


def test_a_version_byte_that_disagrees_with_the_header_is_refused() -> None:
    """The version bytes lie outside every CRC; the header repeats them, so a flip to an older
    version (whose streams read differently) is caught."""
    data = bytearray(archive_to_bytes(HEADER, _sessions()))
    for minor in range(FORMAT_VERSION[1]):
        data[len(MAGIC) + 1] = minor
        with pytest.raises(ArchiveError, match=rf"version bytes 1\.{minor} differ from the header"):
            archive_from_bytes(bytes(data), "x.pfnr")


def test_every_single_byte_flip_is_detected() -> None:
    data = archive_to_bytes(HEADER, _sessions())
    rng = np.random.default_rng(0)
    starts, pos = [], container.PREAMBLE_BYTES
    while pos < len(data):  # chunk boundaries: type, length and CRC fields get flipped too
        starts.append(pos)
        pos += container.FRAMING_BYTES + struct.unpack("<Q", data[pos + 4 : pos + 12])[0]
    framing = {s + k for s in starts for k in range(12)} | {
        s - k for s in starts[1:] for k in (1, 4)
    }
    positions = set(range(40)) | set(range(len(data) - 40, len(data))) | framing
    positions |= set(rng.choice(len(data), 300 - len(positions), replace=False).tolist())
    for i in sorted(positions):
        flipped = bytearray(data)
        flipped[i] ^= int(rng.integers(1, 256))
        with pytest.raises(ArchiveError):
            archive_from_bytes(bytes(flipped), "x.pfnr")


def test_every_truncation_is_detected() -> None:
    data = archive_to_bytes(HEADER, _sessions())
    for cut in range(len(data)):
        with pytest.raises(ArchiveError):
            archive_from_bytes(data[:cut], "x.pfnr")
    with pytest.raises(ArchiveError, match="after the END"):
        archive_from_bytes(data + b"\0", "x.pfnr")


def test_foreign_files(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(30)
    for name, content in [("empty", b""), ("png", png), ("text", b"hello world\n" * 10)]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ArchiveError, match=f"{name} is not a pfnr archive"):
            read_archive(tmp_path / name)
    with pytest.raises(ArchiveError, match="does not exist"):
        read_archive(tmp_path / "missing.pfnr")
    with pytest.raises(ArchiveError, match="cannot read"):
        read_archive(tmp_path)


@pytest.mark.parametrize("version", [(2, 0), (FORMAT_VERSION[0], FORMAT_VERSION[1] + 1), (9, 9)])
def test_newer_versions_rejected(version: tuple[int, int]) -> None:
    data = bytearray(archive_to_bytes(HEADER, []))
    data[len(MAGIC) : len(MAGIC) + 2] = bytes(version)
    with pytest.raises(
        ArchiveError, match=rf"newer pfnr \(format version {version[0]}\.{version[1]}"
    ):
        archive_from_bytes(bytes(data), "x.pfnr")


def _with_chunk(kind: bytes, payload: bytes) -> bytes:
    """A valid archive with one extra chunk inserted after HEAD (END fixed up to match)."""
    head = container.PREAMBLE_BYTES + container.FRAMING_BYTES
    data = archive_to_bytes(HEADER, [])
    head += struct.unpack("<Q", data[container.PREAMBLE_BYTES + 4 : container.PREAMBLE_BYTES + 12])[
        0
    ]
    body = data[:head] + container._chunk(kind, payload)
    return body + container._end_chunk(0, len(body))


def test_ancillary_chunks_skipped_unknown_critical_rejected() -> None:
    got = archive_from_bytes(_with_chunk(b"note", b"anything"), "x.pfnr")
    assert got.header == STAMPED and got.header_bytes == got.file_bytes
    with pytest.raises(ArchiveError, match="unknown critical chunk"):
        archive_from_bytes(_with_chunk(b"NOTE", b"anything"), "x.pfnr")


def test_lengths_are_bounded_before_use() -> None:
    huge = MAGIC + bytes(FORMAT_VERSION) + b"HEAD" + struct.pack("<Q", 2**62) + bytes(70)
    with pytest.raises(ArchiveError, match="announces"):
        archive_from_bytes(huge, "x.pfnr")
    # a zstd frame claiming 2**40 bytes of JSON (raw block of 2 bytes, 8-byte content size)
    bomb = b"\x28\xb5\x2f\xfd\xc0\x00" + struct.pack("<Q", 2**40) + b"\x11\x00\x00{}"
    data = MAGIC + bytes(FORMAT_VERSION) + container._chunk(b"HEAD", bomb)
    with pytest.raises(ArchiveError, match="exceeds"):
        archive_from_bytes(data + container._end_chunk(0, len(data)), "x.pfnr")
    meta = container._json_to_bytes({}, "meta")
    for table in (struct.pack("<I", 2**32 - 1), struct.pack("<IB", 1, 1) + b"a" + bytes([255]) * 8):
        packed = zstandard.ZstdCompressor(write_content_size=True).compress(table)
        payload = struct.pack("<I", len(meta)) + meta + struct.pack("<I", len(packed)) + packed
        body = _with_chunk(b"SESS", payload)
        with pytest.raises(ArchiveError, match="session 1"):
            archive_from_bytes(body, "x.pfnr")


def test_the_session_count_is_bounded_on_read(monkeypatch) -> None:
    data = archive_to_bytes(HEADER, _sessions())
    assert len(archive_from_bytes(data, "x.pfnr").sessions) == 2
    monkeypatch.setattr(container, "MAX_SESSIONS", 1)
    with pytest.raises(ArchiveError, match="more than 1 sessions"):
        archive_from_bytes(data, "x.pfnr")


def test_failed_write_leaves_archive_and_no_litter(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.pfnr"
    first, second = _sessions()
    append_session(path, HEADER, first, 0)
    before, listing = path.read_bytes(), _listing(tmp_path)

    def no_space(fd: int, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def interrupted(*args) -> None:
        raise KeyboardInterrupt

    def boom(*args) -> None:
        raise RuntimeError("boom")

    for name, fake, expected in [
        ("write", no_space, ArchiveError),
        ("replace", interrupted, KeyboardInterrupt),
        ("fsync", boom, RuntimeError),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(os, name, fake)
            with pytest.raises(expected) as info:
                append_session(path, HEADER, second, 1)
        if expected is ArchiveError:
            assert str(info.value) == f"no space left writing {path}; archive unchanged"
        assert path.read_bytes() == before
        assert _listing(tmp_path) == listing


CHILD = """
import json, os, sys, time
from pathlib import Path
from pfnr_codec.container import SessionChunk, append_session

def stall(*args):
    print("stalled", flush=True)
    time.sleep(120)

if sys.argv[2] == "write":
    real = os.write
    os.write = lambda fd, data: (real(fd, bytes(data[:4096])), stall())[0]
else:
    os.fsync = stall
session = SessionChunk({"name": "third"}, {"w": os.urandom(4_000_000)})
append_session(Path(sys.argv[1]), json.loads(sys.argv[3]), session, 2)
"""


@pytest.mark.parametrize("stage", ["write", "fsync"])
def test_kill_during_append_leaves_old_archive(tmp_path: Path, stage: str) -> None:
    path = tmp_path / "a.pfnr"
    write_archive(path, HEADER, _sessions(big=2_000_000))
    before = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(path), stage, json.dumps(HEADER)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "stalled"
        assert any(name.endswith(".tmp") for name in _listing(tmp_path))
    finally:
        child.kill()
        child.wait()
    assert path.read_bytes() == before
    assert len(read_archive(path).sessions) == 2
    # The killed writer's temp file goes with the next write; a live writer's would stay.
    live = tmp_path / f".a.pfnr.{os.getpid()}.0000.tmp"
    live.write_bytes(b"busy")
    write_archive(path, HEADER, _sessions())
    assert [name for name in _listing(tmp_path) if name.endswith(".tmp")] == [live.name]


def test_lock_excludes_a_second_locker(tmp_path: Path) -> None:
    path = tmp_path / "a.pfnr"
    with archive_lock(path):
        with pytest.raises(
            ArchiveError, match=f"locked by another pfnr process \\(pid {os.getpid()}\\)"
        ):
            with archive_lock(path, wait=0):
                pass
        start = time.monotonic()
        with pytest.raises(ArchiveError):
            with archive_lock(path, wait=0.3):
                pass
        assert time.monotonic() - start >= 0.3
    with archive_lock(path, wait=0):  # released on exit
        pass


def test_lock_released_when_holder_dies(tmp_path: Path) -> None:
    path = tmp_path / "a.pfnr"
    script = (
        "import sys, time\nfrom pfnr_codec.container import archive_lock\n"
        "with archive_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(ArchiveError, match=f"pid {child.pid}"):
            with archive_lock(path):
                pass
    finally:
        child.kill()
        child.wait()
    with archive_lock(path, wait=2.0):
        pass


def test_crc_covers_type_and_length() -> None:
    chunk = container._chunk(b"SESS", b"payload")
    assert struct.unpack("<I", chunk[-4:])[0] == zlib.crc32(chunk[:-4])


def _lie_about_size(frame: bytes, declared: int) -> bytes:
    """`frame` with its 4-byte frame content size field rewritten (python-zstandard writes one
    for contents of 64 KiB .. 4 GiB)."""
    assert frame[4] >> 6 == 2  # FCS flag: a 4-byte content size
    end = zstandard.frame_header_size(frame)
    return frame[: end - 4] + struct.pack("<I", declared) + frame[end:]


def test_a_zstd_frame_holding_more_than_it_declares_is_refused_without_inflating() -> None:
    raw = b"{" + b" " * (256 << 20) + b"}"  # 256 MiB of JSON whitespace
    frame = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)
    bomb = _lie_about_size(frame, 1 << 20)  # declares 1 MiB, well under the 16 MiB limit
    data = MAGIC + bytes(FORMAT_VERSION) + container._chunk(b"HEAD", bomb)
    data += container._end_chunk(0, len(data))
    del raw
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="header: corrupt zstd data or not what it declares"):
            archive_from_bytes(data, "x.pfnr")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # the declared 1 MiB and some slack, not the 256 MiB it holds


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x28\xb5\x2f\xfd\x00\x00\x11\x00\x00{}", "does not declare its content size"),
        (zstandard.ZstdCompressor(write_content_size=True).compress(b"{}") + b"x", "corrupt zstd"),
        (zstandard.ZstdCompressor(write_content_size=True).compress(b"{}") * 2, "corrupt zstd"),
        (b"\x28\xb5\x2f\xfd\x20\x00" + b"\x09\x00\x00{", "declares 0 bytes but holds more"),
        (b"not zstd", "corrupt zstd"),
    ],
    ids=["no content size", "trailing byte", "two frames", "declares 0", "not zstd"],
)
def test_zstd_json_must_declare_its_size_and_stand_alone(blob: bytes, message: str) -> None:
    data = MAGIC + bytes(FORMAT_VERSION) + container._chunk(b"HEAD", blob)
    with pytest.raises(ArchiveError, match=message):
        archive_from_bytes(data + container._end_chunk(0, len(data)), "x.pfnr")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"tool": NaN}', "NaN is not strict JSON"),
        ('{"fps": Infinity}', "Infinity is not strict JSON"),
        ('{"fps": -Infinity}', "-Infinity is not strict JSON"),
        ('{"frames": 1, "frames": 2}', "key 'frames' appears twice"),
        ("[1, 2]", "expected a JSON object"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid JSON"),
        ('{"a": ' + "9" * 5000 + "}", "invalid JSON"),
    ],
    ids=["NaN", "Infinity", "-Infinity", "duplicate key", "array", "deep", "long int"],
)
def test_json_blocks_are_strict(text: str, message: str) -> None:
    blob = zstandard.ZstdCompressor(write_content_size=True).compress(text.encode())
    data = MAGIC + bytes(FORMAT_VERSION) + container._chunk(b"HEAD", blob)
    with pytest.raises(ArchiveError, match=message):
        archive_from_bytes(data + container._end_chunk(0, len(data)), "x.pfnr")
    meta = struct.pack("<I", len(blob)) + blob + struct.pack("<I", 0)
    with pytest.raises(ArchiveError, match=f"session 1 meta: .*{message}"):
        archive_from_bytes(_with_chunk(b"SESS", meta), "x.pfnr")


def test_a_symlinked_archive_takes_the_same_lock_and_keeps_its_link(tmp_path: Path) -> None:
    real, link = tmp_path / "real.pfnr", tmp_path / "link.pfnr"
    first, second = _sessions()
    append_session(real, HEADER, first, 0)
    link.symlink_to(real)
    with archive_lock(real):
        with pytest.raises(ArchiveError, match="locked by another pfnr process"):
            with archive_lock(link):
                pass
    with archive_lock(link):
        append_session(link, HEADER, second, 1)
    assert link.is_symlink() and len(read_archive(real).sessions) == 2
    assert _listing(tmp_path) == ["link.pfnr", "real.pfnr", "real.pfnr.lock"]


def test_the_lock_file_is_never_followed_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path = tmp_path / "a.pfnr"
    path.with_name("a.pfnr.lock").symlink_to(victim)
    with pytest.raises(ArchiveError, match="is a symlink; refusing to follow it"):
        with archive_lock(path):
            pass
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_lock_path_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "a.pfnr"
    lock = tmp_path / "a.pfnr.lock"
    lock.mkdir() if kind == "directory" else os.mkfifo(lock)
    with pytest.raises(ArchiveError, match="lock file"):
        with archive_lock(path):
            pass


def test_a_full_disk_while_writing_the_lock_is_a_clean_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.pfnr"

    def no_space(*args) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(ArchiveError, match="cannot write lock file .*: no space left"):
        with archive_lock(path):
            pass
    monkeypatch.undo()
    with archive_lock(path, wait=0):  # and the lock was released
        pass
