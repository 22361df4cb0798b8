"""A session's metadata, read from an untrusted archive: every key type- and bound-checked.

`SessionMeta.from_dict` is the one place that turns the JSON object of a `SESS` chunk into values
the rest of pfnr sizes things from (frame counts, output sizes, frame rates); docs/FORMAT.md,
"Session keys", lists the same bounds. Only `frames` is required. Unknown keys are ignored (newer
writers may add some); a known key of the wrong type or out of its bounds is an ArchiveError that
names the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ArchiveError
from .growth import MAX_GROW

MAX_FRAMES = 10_000_000
MAX_SIDE = 16384  # pixels, each side of `original_size`
MAX_PIXELS = 8192 * 8192  # `original_size` height x width (the working-size limit, config.py)
MAX_FPS = 10_000.0
MAX_TEXT = 4096  # characters of `name`, `source`
MAX_SHORT_TEXT = 64  # characters of `device`, `created`
MAX_GROW_ENTRIES = 9  # one per growable layer: the stem and at most 8 blocks
MAX_COUNT = 1 << 62  # any other integer (weights, epochs, seed): |value| below this
MAX_SOURCE_FRAME = 1 << 31
MAX_SCENES = 65536  # entries of `scenes`
SCENES_VERSION = (1, 3)  # the first format version whose sessions may have `scenes`
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SessionMeta:
    """The metadata of one session (docs/FORMAT.md, "Session keys"); None where a key is absent."""

    frames: int
    name: str | None = None
    source: str | None = None
    source_frames: tuple[int, int] | None = None
    fps: float | None = None
    original_size: tuple[int, int] | None = None
    capacity: float | None = None
    bits: int | None = None
    quality: int | None = None  # the level that set `rate_lambda` (families with a rate term)
    rate_lambda: float | None = None
    grow: tuple[int, ...] | None = None
    scenes: tuple[int, ...] = (0,)  # (1.3) first frame of each scene; latent grids follow them
    psnr: float | None = None
    ms_ssim: float | None = None
    psnr_float: float | None = None
    epochs: int | None = None
    recoveries: int | None = None
    seed: int | None = None
    new_weights: int | None = None
    active_weights: int | None = None
    reused_weights: int | None = None
    sha256: str | None = None
    sha256_exact: str | None = None
    device: str | None = None
    created: str | None = None
    encode_seconds: float | None = None

    def scenes_in(self, version: tuple[int, int]) -> tuple[int, ...]:
        """The scenes its latent grids follow in a file of `version`: files before 1.3 know no
        scenes, so a key a writer of theirs could not mean is ignored (one scene)."""
        return self.scenes if version >= SCENES_VERSION else (0,)

    @classmethod
    def from_dict(cls, data: Any, where: str = "session meta") -> SessionMeta:
        """Check an archive's session metadata; `where` prefixes every error message."""
        if not isinstance(data, dict):
            raise ArchiveError(f"{where}: expected a JSON object, found {type(data).__name__}")
        if "frames" not in data:
            raise ArchiveError(f"{where}: lacks the required key 'frames'")
        values = {
            key: _CHECKS[key](data[key], f"{where}: {key!r}") for key in _CHECKS if key in data
        }
        values = {key: value for key, value in values.items() if value is not None}
        source_frames = values.get("source_frames")
        if source_frames is not None and source_frames[1] - source_frames[0] != values["frames"]:
            raise ArchiveError(
                f"{where}: 'source_frames' {list(source_frames)} does not span "
                f"'frames' = {values['frames']} frames"
            )
        scenes = values.get("scenes")
        if scenes is not None and scenes[-1] >= values["frames"]:
            raise ArchiveError(
                f"{where}: 'scenes' starts a scene at frame {scenes[-1]}, past the session's "
                f"{values['frames']} frames"
            )
        return cls(**values)

    def size(self, default: tuple[int, int]) -> tuple[int, int]:
        """(height, width) the session decodes to at its original size."""
        return self.original_size or default


def _fail(where: str, expected: str, value: Any) -> ArchiveError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ArchiveError(f"{where} must be {expected}, found {shown}")


def _int_in(lo: int, hi: int):
    def check(value: Any, where: str) -> int:
        if not _is_int(value) or not lo <= value <= hi:
            raise _fail(where, f"an integer in {lo}..{hi}", value)
        return value

    return check


def _optional(check):
    def optional(value: Any, where: str) -> Any:
        return None if value is None else check(value, where)

    return optional


def _text(limit: int):
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or len(value) > limit:
            raise _fail(where, f"a string of at most {limit} characters", value)
        return value

    return check


def _number(lo: float, hi: float, *, open_low: bool = False):
    def check(value: Any, where: str) -> float:
        low_ok = _is_number(value) and (lo < value if open_low else lo <= value)
        if not low_ok or not value <= hi:
            bracket = "(" if open_low else "["
            raise _fail(where, f"a finite number in {bracket}{lo}, {hi}]", value)
        return float(value)

    return check


def _fps(value: Any, where: str) -> float:
    return _number(0.0, MAX_FPS, open_low=True)(value, where)


def _original_size(value: Any, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_is_int(v) and 1 <= v <= MAX_SIDE for v in value)
        or value[0] * value[1] > MAX_PIXELS
    ):
        raise _fail(
            where, f"[height, width], integers in 1..{MAX_SIDE}, at most {MAX_PIXELS} pixels", value
        )
    return (value[0], value[1])


def _source_frames(value: Any, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_is_int(v) and 0 <= v <= MAX_SOURCE_FRAME for v in value)
        or value[0] >= value[1]
    ):
        raise _fail(
            where, f"[start, end), integers with 0 <= start < end <= {MAX_SOURCE_FRAME}", value
        )
    return (value[0], value[1])


def _grow(value: Any, where: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_GROW_ENTRIES
        or not all(_is_int(v) and 0 <= v <= MAX_GROW for v in value)
    ):
        raise _fail(where, f"a list of 1..{MAX_GROW_ENTRIES} integers in 0..{MAX_GROW}", value)
    return tuple(value)


def _scenes(value: Any, where: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_SCENES
        or not all(_is_int(v) and 0 <= v < MAX_FRAMES for v in value)
        or value[0] != 0
        or any(b <= a for a, b in zip(value, value[1:], strict=False))
    ):
        raise _fail(
            where, f"a list of 1..{MAX_SCENES} increasing frame numbers starting at 0", value
        )
    return tuple(value)


def _sha256(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise _fail(where, "64 lowercase hexadecimal digits", value)
    return value


_CHECKS = {
    "frames": _int_in(1, MAX_FRAMES),
    "name": _text(MAX_TEXT),
    "source": _text(MAX_TEXT),
    "source_frames": _source_frames,
    "fps": _fps,
    "original_size": _original_size,
    "capacity": _number(0.0, 1.0, open_low=True),
    "bits": _int_in(1, 16),
    "quality": _optional(_int_in(1, 7)),
    "rate_lambda": _optional(_number(0.0, 1e6)),
    "grow": _optional(_grow),
    "scenes": _optional(_scenes),
    "psnr": _optional(_number(-1000.0, 1000.0)),
    "ms_ssim": _optional(_number(-1.0, 1.0)),
    "psnr_float": _optional(_number(-1000.0, 1000.0)),
    "epochs": _int_in(0, MAX_COUNT),
    "recoveries": _int_in(0, MAX_COUNT),
    "seed": _int_in(-MAX_COUNT, MAX_COUNT),
    "new_weights": _int_in(0, MAX_COUNT),
    "active_weights": _int_in(0, MAX_COUNT),
    "reused_weights": _int_in(0, MAX_COUNT),
    "sha256": _sha256,
    "sha256_exact": _sha256,
    "device": _text(MAX_SHORT_TEXT),
    "created": _text(MAX_SHORT_TEXT),
    "encode_seconds": _optional(_number(0.0, 1e9)),
}
