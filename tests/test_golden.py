"""Archives written by every released format version decode to the same frames forever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pfnr_codec.api import decode_session, fingerprint, inspect_archive

GOLDEN = Path(__file__).resolve().parent / "golden"
ARCHIVES = sorted(GOLDEN.glob("v*.pfnr"))


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
