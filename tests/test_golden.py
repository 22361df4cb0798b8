"""Archives written by every released format version decode to the same frames forever."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pfnr_codec.api import EncodeOptions, decode_session, encode_video, fingerprint, inspect_archive
from pfnr_codec.bitstream import unpack_grid
from pfnr_codec.container import END_PAYLOAD_BYTES, FORMAT_VERSION, FRAMING_BYTES, read_archive
from pfnr_codec.entropy import decode_latents, get_coder
from pfnr_codec.video import write_video

from synthetic import synthetic_frames

GOLDEN = Path(__file__).resolve().parent / "golden"
ARCHIVES = sorted(GOLDEN.glob("v*.pfnr"))
MOTION_VERSION = (1, 5)  # the first whose sessions may store their motion


def test_there_is_a_golden_archive():
    assert ARCHIVES, "tests/golden holds no archive: run tests/golden/make_golden.py"


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda p: p.stem)
def test_golden_archive_decodes_to_its_recorded_frames(archive):
    expected = json.loads(archive.with_suffix(".json").read_text())["sha256_exact"]
    assert len(inspect_archive(archive).sessions) == len(expected)
    for session, digest in expected.items():
        result = decode_session(archive, int(session), size="working", exact=True, device="cpu")
        assert fingerprint(result.frames) == digest
        assert result.matches_encode is True


@pytest.mark.parametrize("archive", ARCHIVES[:-1], ids=lambda p: p.stem)
def test_appending_to_an_older_version_keeps_it_and_writes_only_what_it_defines(tmp_path, archive):
    """A session appended to a file of an earlier format version is stored as that version defines
    it (the version bytes stay), so the file stays readable by that version's readers; every
    session then decodes to its own frames."""
    path = tmp_path / archive.name
    shutil.copyfile(archive, path)
    before = read_archive(path)
    clip = tmp_path / "more.mkv"
    write_video(synthetic_frames(5, 30, 44, seed=7), clip, fps=25)
    encode_video(path, clip, EncodeOptions(epochs=2, device="cpu"))
    after = read_archive(path)
    assert after.version == before.version < FORMAT_VERSION
    streams = after.sessions[-1].streams
    assert not any(name.endswith("/arm") for name in streams)  # (1.6)
    if after.version < MOTION_VERSION:
        assert not any(name.startswith("motion/") for name in streams)
    kept = before.file_bytes - FRAMING_BYTES - END_PAYLOAD_BYTES  # all but the old END chunk
    assert path.read_bytes()[:kept] == archive.read_bytes()[:kept]
    expected = json.loads(archive.with_suffix(".json").read_text())["sha256_exact"]
    for session, digest in expected.items():
        result = decode_session(path, int(session), size="working", exact=True, device="cpu")
        assert fingerprint(result.frames) == digest
    new = decode_session(path, len(expected) + 1, device="cpu")
    assert new.matches_encode is True


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("v*_latents.json")), ids=lambda p: p.stem)
def test_golden_latents_streams_decode_to_their_values(golden):
    recorded = json.loads(golden.read_text())
    coder = get_coder(recorded["coder"])
    for entry in recorded["streams"]:
        values = np.array(entry["values"], dtype=np.int64)
        data = base64.b64decode(entry["stream"])
        width = entry.get("width")  # (1.4) a SPATIAL stream's grid width
        assert np.array_equal(decode_latents(data, *values.shape, coder, width), values)


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("v*_grid.json")), ids=lambda p: p.stem)
def test_golden_grids_with_a_context_model_decode_to_their_values(golden):
    """(1.6) Grids whose channels are coded by their context model (mode 3), in each coding
    order, and by a latents stream."""
    recorded = json.loads(golden.read_text())
    version = tuple(int(v) for v in golden.stem[1:].split("_")[0].split("."))
    for entry in recorded["grids"]:
        values = np.array(entry["values"], dtype=np.int64)
        streams = {name: base64.b64decode(data) for name, data in entry["streams"].items()}
        coder = get_coder(recorded["coder"])
        assert np.array_equal(unpack_grid(streams, "grid", values.shape, coder, version), values)
