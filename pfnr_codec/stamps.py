"""The clock readings an archive records, and SOURCE_DATE_EPOCH for byte-identical files.

Two encodes of one video with the same settings, seed and epoch budget train the same session,
but their files would still differ where they record the clock: when the archive and each session
were created, and how long the session took. With SOURCE_DATE_EPOCH set (reproducible-builds.org:
a Unix time in seconds), `created` is that time and `encode_seconds` is not stored, so such encodes
give the same bytes. (A --minutes budget still ties the epoch count to the machine's speed.)
"""

from __future__ import annotations

import os
import time
from typing import Any

from .errors import UsageError

ENV = "SOURCE_DATE_EPOCH"
MAX_DIGITS = 12  # beyond the year 33000: a typo, not a time


def source_date_epoch() -> int | None:
    """The fixed time asked for, if any; a malformed value is a usage error (checked before an
    encode locks or trains)."""
    raw = os.environ.get(ENV, "")
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_DIGITS:
        raise UsageError(f"{ENV} must be a Unix time in whole seconds, got {raw[:40]!r}")
    return int(raw)


def created_stamp() -> str:
    """UTC time of creation as the archive records it: now, or SOURCE_DATE_EPOCH."""
    epoch = source_date_epoch()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def encode_time_entry(seconds: float) -> dict[str, Any]:
    """The session metadata's `encode_seconds`, or nothing under SOURCE_DATE_EPOCH."""
    return {} if source_date_epoch() is not None else {"encode_seconds": round(seconds, 3)}
