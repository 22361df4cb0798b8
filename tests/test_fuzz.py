"""Crafted archives: CRC-valid files whose header, session metadata or payload is hostile or wrong.

Every one must end in one ArchiveError (exit 1 and one line from the CLI), quickly and in bounded
memory, never in another exception or in frames presented as the session's. The cases are made
field by field from docs/FORMAT.md (every header model key and session key: wrong type, NaN,
negative, huge, just past a bound, at a bound), from the golden archives of tests/golden; a seeded
sample of them also runs through the CLI in a subprocess whose peak memory and time are measured.
"""

from __future__ import annotations

import copy
import json
import math
import random
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pfnr_codec import container
from pfnr_codec.api import decode_session, inspect_archive
from pfnr_codec.config import INT_FIELD_BOUNDS, LIST_FIELD_BOUNDS, ModelConfig
from pfnr_codec.container import MAGIC, SessionChunk, read_archive
from pfnr_codec.errors import ArchiveError
from pfnr_codec.session_meta import _CHECKS, SessionMeta

GOLDEN = Path(__file__).resolve().parent / "golden"
V10, V11, V12, V13, V14, V15, V16 = (GOLDEN / f"v1.{minor}.pfnr" for minor in range(7))
# Crafted files carry this reader's version bytes: the latent golden they start from is the newest.
LATENT = V16
NAN, INF = float("nan"), float("inf")
SECONDS = 5.0  # per case, in-process (the reader must refuse quickly, not after minutes)
NAMED, ANY, MAYBE = "named", "any", "maybe"  # refused naming the field / refused / may be valid


def _zjson(obj: Any) -> bytes:
    """A zstd JSON block as a careless or hostile writer makes it: NaN and Infinity allowed."""
    text = json.dumps(obj, allow_nan=True, separators=(",", ":"))
    return zstandard.ZstdCompressor(write_content_size=True).compress(text.encode())


def _session_payload(session: SessionChunk, meta_block: bytes | None = None) -> bytes:
    payload = container.session_to_bytes(SessionChunk({}, session.streams))
    (old,) = struct.unpack("<I", payload[:4])
    block = _zjson(session.meta) if meta_block is None else meta_block
    return struct.pack("<I", len(block)) + block + payload[4 + old :]


def craft(
    header: dict[str, Any] | bytes, sessions: list[SessionChunk], first_meta: bytes | None = None
) -> bytes:
    """A CRC-valid archive; `header` may be a ready zstd block, `first_meta` session 1's."""
    head = header if isinstance(header, bytes) else _zjson(header)
    body = MAGIC + bytes(container.FORMAT_VERSION) + container._chunk(b"HEAD", head)
    for i, session in enumerate(sessions):
        meta = first_meta if i == 0 else None
        body += container._chunk(b"SESS", _session_payload(session, meta))
    return body + container._end_chunk(len(sessions), len(body))


def _golden(path: Path) -> tuple[dict[str, Any], list[SessionChunk]]:
    contents = read_archive(path)
    return contents.header, contents.sessions


# ---------------------------------------------------------------------------- the cases


BAD_VALUES: list[tuple[str, Any]] = [
    ("string", "x"),
    ("true", True),
    ("null", None),
    ("list", [1]),
    ("object", {"a": 1}),
    ("fraction", 1.5),
    ("NaN", NAN),
    ("Infinity", INF),
    ("negative", -1),
    ("zero", 0),
    ("huge", 10**12),
    ("2^64", 2**64),
]


def _model_cases() -> list[tuple[str, str, Any, bool]]:
    """(id, field, value, expectation) for every model field of the header."""
    cases = []
    for key in (f.name for f in ModelConfig.__dataclass_fields__.values()):
        for label, value in BAD_VALUES:
            nullable = key in ("fso_block", "fine_block") and value is None
            in_range = key in ("fso_block", "fine_block") and value == 0
            if key in ("fso_only", "follow_motion") and value is True:
                in_range = True
            valid = nullable or in_range or (key == "pe_base" and label == "fraction")
            refuse = ANY if key in LIST_FIELD_BOUNDS and label == "list" else NAMED
            cases.append((f"{key}={label}", key, value, MAYBE if valid else refuse))
        if key in INT_FIELD_BOUNDS:
            lo, hi = INT_FIELD_BOUNDS[key]
            if key not in ("base_height", "base_width"):  # valid, but a big network: seconds
                cases.append((f"{key}=max", key, hi, MAYBE))
            cases += [(f"{key}=max+1", key, hi + 1, NAMED), (f"{key}=min-1", key, lo - 1, NAMED)]
        if key in LIST_FIELD_BOUNDS:
            n_lo, n_hi, lo, hi = LIST_FIELD_BOUNDS[key]
            cases.append((f"{key}=value max+1", key, [hi + 1] * max(1, n_lo), NAMED))
            cases.append((f"{key}=length max+1", key, [lo] * (n_hi + 1), NAMED))
            cases.append((f"{key}=NaN inside", key, [NAN] * max(1, n_lo), NAMED))
    return cases


def _meta_cases() -> list[tuple[str, str, Any, bool]]:
    """(id, key, value, expectation) for every session key (docs/FORMAT.md)."""
    optional = {"grow", "psnr", "ms_ssim", "psnr_float", "encode_seconds", "quality", "rate_lambda"}
    optional |= {"scenes"}
    numbers = {"psnr", "psnr_float", "ms_ssim", "encode_seconds", "capacity", "fps", "rate_lambda"}
    cases = []
    for key in _CHECKS:
        for label, value in BAD_VALUES:
            allowed = (value is None and key in optional) or (
                key in numbers and label in ("fraction", "zero", "negative")
            )
            if key in ("epochs", "recoveries", "seed", "new_weights") and label == "zero":
                allowed = True
            if key == "seed" and label in ("negative", "huge"):
                allowed = True
            if key in ("fps", "capacity") and label in ("zero", "negative"):
                allowed = False
            if key in ("encode_seconds", "rate_lambda") and label == "negative":
                allowed = False
            if key in ("capacity", "ms_ssim") and label == "fraction":
                allowed = False
            if key in ("epochs", "recoveries", "active_weights", "reused_weights") and label in (
                "huge",
            ):
                allowed = True
            if key.endswith("_weights") and label in ("zero", "huge"):
                allowed = True
            if key in ("name", "source", "device", "created") and label == "string":
                allowed = True
            refuse = ANY if key == "grow" and label == "list" else NAMED  # checked per network
            cases.append((f"{key}={label}", key, value, MAYBE if allowed else refuse))
    cases += [
        ("frames=max+1", "frames", 10_000_001, NAMED),
        ("original_size=20000x20000", "original_size", [20000, 20000], NAMED),
        ("original_size=text", "original_size", "abc", NAMED),
        ("original_size=bools", "original_size", [True, True], NAMED),
        ("original_size=three", "original_size", [30, 44, 3], NAMED),
        ("source_frames=reversed", "source_frames", [6, 0], NAMED),
        ("source_frames=other span", "source_frames", [0, 7], NAMED),
        ("fps=max+", "fps", 10_000.5, NAMED),
        ("name=long", "name", "n" * 5000, NAMED),
        ("sha256=upper", "sha256", "A" * 64, NAMED),
        ("grow=too many", "grow", [0] * 10, NAMED),
        ("scenes=past the end", "scenes", [0, 10**6], NAMED),
        ("scenes=too many", "scenes", list(range(65537)), NAMED),
        ("grow=one too wide", "grow", [5000, 0, 0, 0], NAMED),
        ("fps=max", "fps", 10_000, MAYBE),
        ("original_size=min", "original_size", [1, 1], MAYBE),
        ("bits=16", "bits", 16, MAYBE),
    ]
    return cases


def _expected(key: str, value: Any) -> str:
    """What the refusal of `key` = `value` must say: the key, or what strict JSON refuses."""
    text = json.dumps(value, allow_nan=True)
    for constant in ("NaN", "Infinity"):
        if constant in text:
            return f"{constant} is not strict JSON"
    return repr(key)


def _sampled(cases: list[tuple[str, str, Any, str]], seed: int, valid: int = 8) -> list:
    """Every case that must be refused (refusals are cheap), and a seeded sample of the ones that
    may be valid (each of those renders a whole session)."""
    maybe = [c for c in cases if c[3] == MAYBE]
    return [c for c in cases if c[3] != MAYBE] + random.Random(seed).sample(maybe, valid)


MODEL_CASES = _sampled(_model_cases(), seed=1)
META_CASES = _sampled(_meta_cases(), seed=2)


def _check_refused(path: Path, name: str | None, expect: str) -> None:
    """info and decode of `path`: each refused with an ArchiveError (saying `name` when given)
    or, when the case may be valid, either that or success; always within SECONDS."""
    for run in (
        lambda: inspect_archive(path),
        lambda: decode_session(path, 1, device="cpu", size="original"),
    ):
        began = time.monotonic()
        try:
            run()
        except ArchiveError as exc:
            message = str(exc)
            assert "\n" not in message
            if expect == NAMED and name is not None:
                assert name in message, message
        else:
            assert expect == MAYBE, "a crafted archive was accepted"
        assert time.monotonic() - began < SECONDS


@pytest.mark.parametrize(
    ("key", "value", "expect"), [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES]
)
def test_every_header_model_field_is_checked(tmp_path: Path, key: str, value: Any, expect: str):
    latent_key = any(word in key for word in ("latent", "fine", "motion"))
    header, sessions = _golden(LATENT if latent_key else V10)
    header = copy.deepcopy(header)
    header["model"][key] = value
    path = tmp_path / "crafted.pfnr"
    path.write_bytes(craft(header, sessions))
    _check_refused(path, _expected(key, value), expect)


def test_follow_motion_in_a_file_before_it_existed_is_refused(tmp_path: Path, monkeypatch):
    header, sessions = _golden(V14)
    header = copy.deepcopy(header)
    header["model"]["follow_motion"] = True
    monkeypatch.setattr(container, "FORMAT_VERSION", (1, 4))  # craft a 1.4 file
    data = craft(header, sessions)
    monkeypatch.undo()
    path = tmp_path / "crafted.pfnr"
    path.write_bytes(data)
    _check_refused(path, "follow_motion", NAMED)


@pytest.mark.parametrize(
    ("key", "value", "expect"), [c[1:] for c in META_CASES], ids=[c[0] for c in META_CASES]
)
def test_every_session_key_is_checked(tmp_path: Path, key: str, value: Any, expect: str):
    header, sessions = _golden(LATENT)
    sessions = copy.deepcopy(sessions)
    sessions[0].meta[key] = value
    if key == "frames":
        del sessions[0].meta["source_frames"]  # or the frame range alone would give it away
    path = tmp_path / "crafted.pfnr"
    path.write_bytes(craft(header, sessions))
    _check_refused(path, _expected(key, value), expect)


@pytest.mark.parametrize("frames", [5, 7, 48, 10_000_000])
def test_a_frame_count_that_is_not_the_encoded_one_never_decodes(tmp_path: Path, frames: int):
    for golden in (V10, LATENT):
        header, sessions = _golden(golden)
        sessions = copy.deepcopy(sessions)
        sessions[0].meta["frames"] = frames
        del sessions[0].meta["source_frames"]
        path = tmp_path / "crafted.pfnr"
        path.write_bytes(craft(header, sessions))
        began = time.monotonic()
        with pytest.raises(ArchiveError):
            decode_session(path, 1, device="cpu", size="working")
        assert time.monotonic() - began < SECONDS


def test_header_keys_outside_the_model(tmp_path: Path):
    header, sessions = _golden(LATENT)
    path = tmp_path / "crafted.pfnr"
    for change in (
        {"tool": "other"},
        {"tool": None},
        {"coder": "lzma"},
        {"coder": ["constriction"]},
        {"model": None},
        {"model": "x"},
        {"model": {**header["model"], "unknown": 1}},
    ):
        path.write_bytes(craft({**header, **change}, sessions))
        _check_refused(path, None, ANY)
    for key in ("model", "coder"):
        path.write_bytes(craft({k: v for k, v in header.items() if k != key}, sessions))
        _check_refused(path, None, ANY)


def test_session_meta_that_is_not_an_object_or_lacks_frames(tmp_path: Path):
    header, sessions = _golden(LATENT)
    path = tmp_path / "crafted.pfnr"
    for meta in (b"[]", b"3", b'"x"', b"{}", b'{"frames": NaN}', b'{"frames": 6, "frames": 6}'):
        block = zstandard.ZstdCompressor(write_content_size=True).compress(meta)
        path.write_bytes(craft(header, sessions, first_meta=block))
        _check_refused(path, None, ANY)


def test_session_meta_of_the_golden_archives_passes_and_round_trips():
    for golden in (V10, V11, V12, V13, V14, V15, V16):
        for session in read_archive(golden).sessions:
            meta = SessionMeta.from_dict(session.meta)
            assert meta.frames == session.meta["frames"]
            assert meta.original_size == tuple(session.meta["original_size"])
            assert meta.sha256 == session.meta["sha256"]
    with pytest.raises(ArchiveError, match="lacks the required key 'frames'"):
        SessionMeta.from_dict({"name": "x"})
    assert SessionMeta.from_dict({"frames": 3, "new key": object()}).frames == 3  # ignored


# ---------------------------------------------------------------------------- tampered payloads


def _tamper(tmp_path: Path, stream: str, byte: int, bit: int) -> Path:
    header, sessions = _golden(LATENT)
    sessions = copy.deepcopy(sessions)
    data = bytearray(sessions[0].streams[stream])
    data[byte] ^= 1 << bit
    sessions[0].streams[stream] = bytes(data)
    path = tmp_path / "tampered.pfnr"
    path.write_bytes(container.archive_to_bytes(header, sessions))
    return path


@pytest.mark.parametrize(
    ("stream", "byte", "bit"),
    [
        ("head/bias", 4, 6),
        ("blocks.2.conv.weight/scales", 3, 0),
        ("latent/0/1", 2, 0),
        ("motion/x", 1, 0),
    ],
)
def test_a_payload_changed_with_its_crcs_recomputed_is_not_decoded(tmp_path, stream, byte, bit):
    path = _tamper(tmp_path, stream, byte, bit)
    inspect_archive(path)  # info cannot know: it renders nothing
    for exact in (False, True):
        with pytest.raises(ArchiveError, match="archive content does not match what was encoded"):
            decode_session(path, 1, device="cpu", exact=exact)


def test_a_float32_difference_alone_is_reported_as_rendering_noise(tmp_path: Path):
    """A float32 fingerprint the frames miss, with the float64 one matching, is what another
    device gives: the decode succeeds and says the bytes differ."""
    header, sessions = _golden(LATENT)
    sessions = copy.deepcopy(sessions)
    sessions[0].meta["sha256"] = "0" * 64
    path = tmp_path / "other_device.pfnr"
    path.write_bytes(container.archive_to_bytes(header, sessions))
    assert decode_session(path, 1, device="cpu").matches_encode is False
    assert decode_session(path, 1, device="cpu", exact=True).matches_encode is True
    for key in ("sha256", "sha256_exact"):
        del sessions[0].meta[key]
    path.write_bytes(container.archive_to_bytes(header, sessions))
    assert decode_session(path, 1, device="cpu").matches_encode is None


def test_a_decode_larger_than_the_memory_budget_is_refused(tmp_path: Path, monkeypatch):
    from pfnr_codec import api

    monkeypatch.setattr(api, "MAX_DECODE_BYTES", 6 * 3 * 24 * 40 * 2 - 1)
    with pytest.raises(ArchiveError, match="decode a smaller frame range"):
        decode_session(V11, 1, device="cpu", size="working")
    assert decode_session(V11, 1, device="cpu", size="working", frames=(0, 5)).frames.shape[0] == 5


# ---------------------------------------------------------------------------- through the CLI


CHILD = textwrap.dedent(
    """
    import resource, subprocess, sys, time
    began = time.monotonic()
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(done.returncode, seconds, peak)
    sys.stdout.write(done.stderr)
    """
)
IMPORT_ONLY = ["-c", "import pfnr_codec.cli, pfnr_codec.api, pfnr_codec.archive"]


def _measured(args: list[str], cwd: Path) -> tuple[int, float, int, str]:
    """Exit code, seconds, peak RSS (bytes) and stderr of `python args...` (a fresh grandchild,
    so the peak is its own)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=180,
    ).stdout
    first, _, stderr = out.partition("\n")
    code, seconds, peak = first.split()
    return int(code), float(seconds), int(peak), stderr


def _cli_cases(tmp_path: Path) -> dict[str, Path]:
    header, sessions = _golden(V10)
    cases: dict[str, bytes] = {}
    big = copy.deepcopy(header)
    big["model"]["stem_hidden"] = 2**24
    cases["stem_hidden 2^24"] = craft(big, sessions)
    many = copy.deepcopy(sessions)
    many[0].meta["frames"] = 10_000_000
    del many[0].meta["source_frames"]
    cases["frames 10^7"] = craft(header, many)
    huge = copy.deepcopy(sessions)
    huge[0].meta["original_size"] = [20000, 20000]
    cases["original_size 20000x20000"] = craft(header, huge)
    bomb = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(
        b'{"frames": 6,' + b" " * (512 << 20) + b"}"
    )
    end = zstandard.frame_header_size(bomb)
    bomb = bomb[: end - 4] + struct.pack("<I", 1 << 20) + bomb[end:]  # declares 1 MiB
    cases["meta zstd bomb"] = craft(header, sessions, first_meta=bomb)
    paths = {}
    for i, (label, data) in enumerate(cases.items()):
        paths[label] = tmp_path / f"case{i}.pfnr"
        paths[label].write_bytes(data)
    paths["tampered payload"] = _tamper(tmp_path, "head/bias", 4, 6)
    return paths


def test_crafted_archives_through_the_cli_one_line_bounded_memory_and_time(tmp_path: Path):
    root = Path(__file__).resolve().parents[1]
    _, baseline, _, _ = _measured(IMPORT_ONLY, root)
    cases = _cli_cases(tmp_path)
    rng = random.Random(13)
    decode_only = ("tampered payload", "frames 10^7")  # info renders nothing: both are fine there
    runs = [(label, "info") for label in cases if label not in decode_only]
    runs = rng.sample(runs, 2) + [("tampered payload", "decode"), ("frames 10^7", "decode")]
    for label, command in runs:
        args = ["-m", "pfnr_codec", "info", str(cases[label])]
        if command == "decode":
            output = ["-o", str(tmp_path / "o.y4m"), "--device", "cpu"]
            args = ["-m", "pfnr_codec", "decode", "-s", "1", "-a", str(cases[label]), *output]
        code, seconds, peak, stderr = _measured(args, root)
        lines = stderr.strip().splitlines()
        assert code == 1, (label, command, stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (label, stderr)
        assert "unexpected" not in stderr and "Traceback" not in stderr
        assert peak < 500 << 20, (label, command, peak)
        assert seconds - baseline < SECONDS, (label, command, seconds, baseline)
    assert not (tmp_path / "o.y4m").exists()


def test_cases_are_what_they_say():
    """The generator covers every model field and every session key."""
    assert {c[1] for c in MODEL_CASES if c[3] != MAYBE} == set(ModelConfig.__dataclass_fields__)
    assert {c[1] for c in META_CASES if c[3] != MAYBE} == set(_CHECKS)
    assert all(math.isnan(c[2]) for c in MODEL_CASES if c[0].endswith("=NaN"))
