"""Model configuration and presets.

`ModelConfig` changes the bytes of an archive, so it travels in the archive header and decoding needs
nothing else. `Preset` adds the defaults an encoder starts from (capacity, bits, training budget); the
working size of an archive is derived from its first video's aspect ratio and the preset's pixel budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ArchiveError, ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """The shared network of one archive. Output size = base grid x product of strides."""

    base_height: int
    base_width: int
    strides: tuple[int, ...]
    channels: tuple[int, ...]  # output channels of each upsampling block
    base_channels: int  # channels of the stem's feature map (base_height x base_width)
    stem_hidden: int
    pe_levels: int = 40
    pe_base: float = 1.25
    fso_block: int | None = 1  # index of the f-NeRV block (None: plain NeRV)
    fso_modes: tuple[int, int] = (4, 4)  # kept frequencies: rows of each sign, columns
    fso_only: bool = False  # the f-NeRV block drops its conv+PixelShuffle branch
    linear_mask_block: int = 4  # consecutive inputs of a stem row sharing one mask bit

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.channels) or not self.strides:
            raise ConfigError(
                f"model needs one channel count per stride, got strides {self.strides} "
                f"and channels {self.channels}"
            )
        positive = [self.base_height, self.base_width, self.base_channels, self.stem_hidden]
        positive += [*self.strides, *self.channels, self.pe_levels, *self.fso_modes]
        positive.append(self.linear_mask_block)
        if min(positive) < 1:
            raise ConfigError(f"model sizes must be positive, got {self}")
        if self.fso_block is not None and not 0 <= self.fso_block < len(self.strides):
            raise ConfigError(f"fso_block {self.fso_block} is not one of the model's blocks")

    @property
    def upscale(self) -> int:
        return math.prod(self.strides)

    @property
    def height(self) -> int:
        return self.base_height * self.upscale

    @property
    def width(self) -> int:
        return self.base_width * self.upscale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def weight_count(self) -> int:
        """Shared weights of the network this config builds (without heads)."""
        count = 2 * self.pe_levels * self.stem_hidden
        count += self.stem_hidden * self.base_channels * self.base_height * self.base_width
        c_in = self.base_channels
        for i, (stride, c_out) in enumerate(zip(self.strides, self.channels, strict=True)):
            fso = self.fso_block == i
            if not (fso and self.fso_only):
                count += c_out * stride**2 * c_in * 9
            if fso:
                count += 2 * c_in * c_out * 2 * self.fso_modes[0] * self.fso_modes[1]
            c_in = c_out
        return count

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from an archive header's JSON, checking every key, type and bound before anything
        is sized from it (the archive is untrusted; docs/FORMAT.md lists the bounds)."""
        if not isinstance(data, dict):
            raise ArchiveError(f"model config must be an object, found {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ArchiveError(f"model config has unknown keys: {sorted(set(data) - known)}")
        missing = sorted(known - set(data) - _OPTIONAL_FIELDS)
        if missing:
            raise ArchiveError(f"model config lacks the keys {missing}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            values[key] = _checked_field(key, value)
        try:
            config = cls(**values)
        except ConfigError as exc:
            raise ArchiveError(f"model config in header is invalid: {exc}") from None
        if config.height * config.width > MAX_WORKING_PIXELS:
            raise ArchiveError(
                f"model config: working size {config.height}x{config.width} exceeds "
                f"{MAX_WORKING_PIXELS} pixels"
            )
        if config.weight_count > MAX_WEIGHTS:
            raise ArchiveError(
                f"model config: {config.weight_count} shared weights exceed the limit {MAX_WEIGHTS}"
            )
        return config


# Bounds on every field an archive header may give (docs/FORMAT.md, "Header keys"): far above any
# preset, low enough that nothing is allocated or looped over before the model is known to be sane.
INT_FIELD_BOUNDS = {
    "base_height": (1, 1024),
    "base_width": (1, 1024),
    "base_channels": (1, 4096),
    "stem_hidden": (1, 4096),
    "pe_levels": (1, 256),
    "linear_mask_block": (1, 64),
}
LIST_FIELD_BOUNDS = {  # (min length, max length, min value, max value)
    "strides": (1, 8, 1, 8),
    "channels": (1, 8, 1, 4096),
    "fso_modes": (2, 2, 1, 64),
}
PE_BASE_BOUNDS = (1.0, 4.0)
MAX_WORKING_PIXELS = 8192 * 8192
MAX_WEIGHTS = 1 << 28  # the largest count a stream may hold (docs/FORMAT.md)
_OPTIONAL_FIELDS = {
    "pe_levels",
    "pe_base",
    "fso_block",
    "fso_modes",
    "fso_only",
    "linear_mask_block",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_field(key: str, value: Any) -> Any:
    """One header field of the model config, type- and bound-checked; names the field if not."""

    def fail(expected: str) -> ArchiveError:
        return ArchiveError(f"model config field {key!r} must be {expected}, found {value!r}")

    if key in INT_FIELD_BOUNDS:
        lo, hi = INT_FIELD_BOUNDS[key]
        if not _is_int(value) or not lo <= value <= hi:
            raise fail(f"an integer in {lo}..{hi}")
        return value
    if key in LIST_FIELD_BOUNDS:
        n_lo, n_hi, lo, hi = LIST_FIELD_BOUNDS[key]
        if (
            not isinstance(value, list | tuple)
            or not n_lo <= len(value) <= n_hi
            or not all(_is_int(v) and lo <= v <= hi for v in value)
        ):
            raise fail(f"a list of {n_lo}..{n_hi} integers in {lo}..{hi}")
        return tuple(value)
    if key == "pe_base":
        lo, hi = PE_BASE_BOUNDS
        if not isinstance(value, int | float) or isinstance(value, bool) or not lo < value <= hi:
            raise fail(f"a number in ({lo}, {hi}]")
        return float(value)
    if key == "fso_block":
        if value is not None and (not _is_int(value) or not 0 <= value < 8):
            raise fail("null or an integer in 0..7")
        return value
    if key == "fso_only":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    raise ArchiveError(f"model config has unknown key {key!r}")


@dataclass(frozen=True)
class Preset:
    """A model family plus the encoder defaults that go with it."""

    name: str
    description: str
    target_pixels: int  # working-size budget (height x width), never above the source's
    strides: tuple[int, ...]
    channels: tuple[int, ...]
    base_channels: int
    stem_hidden: int
    pe_levels: int
    fso_modes: tuple[int, int]
    capacity: float
    bits: int
    epochs: int
    learning_rate: float
    batch_size: int

    def model_config(self, height: int, width: int) -> ModelConfig:
        """The model for a first video of `height` x `width` pixels."""
        base_h, base_w = base_grid(self.target_pixels, self.upscale, height, width)
        return ModelConfig(
            base_height=base_h,
            base_width=base_w,
            strides=self.strides,
            channels=self.channels,
            base_channels=self.base_channels,
            stem_hidden=self.stem_hidden,
            pe_levels=self.pe_levels,
            fso_modes=self.fso_modes,
        )

    @property
    def upscale(self) -> int:
        return math.prod(self.strides)


def base_grid(target_pixels: int, upscale: int, height: int, width: int) -> tuple[int, int]:
    """The stem grid whose upscaled size keeps the video's aspect ratio within the pixel budget."""
    if height < 1 or width < 1:
        raise ConfigError(f"video size must be positive, got {height}x{width}")
    budget = min(target_pixels, height * width) / upscale**2
    base_w = max(1, math.floor(math.sqrt(budget * width / height)))
    base_h = max(1, round(base_w * height / width))
    return base_h, base_w


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="for tests: trains in seconds at about 32x48",
        target_pixels=32 * 48,
        strides=(2, 2, 2),
        channels=(24, 16, 12),
        base_channels=8,
        stem_hidden=32,
        pe_levels=16,
        fso_modes=(2, 3),
        capacity=0.3,
        bits=8,
        epochs=40,
        learning_rate=2e-2,
        batch_size=4,
    ),
    "cpu": Preset(
        name="cpu",
        description="the default: about 180x320, fits on a 2-core CPU in minutes",
        target_pixels=180 * 320,
        strides=(5, 2, 2),
        channels=(48, 32, 16),
        base_channels=24,
        stem_hidden=64,
        pe_levels=40,
        fso_modes=(4, 4),
        capacity=0.5,
        bits=6,
        epochs=150,
        learning_rate=1.5e-2,
        batch_size=2,
    ),
    "paper": Preset(
        name="paper",
        description="720x1280, NeRV-L-like widths, FSO in block 2; meant for a GPU",
        target_pixels=720 * 1280,
        strides=(5, 2, 2, 2, 2),
        channels=(112, 96, 96, 96, 96),
        base_channels=26,
        stem_hidden=512,
        pe_levels=80,
        fso_modes=(8, 8),
        capacity=0.3,
        bits=8,
        epochs=150,
        learning_rate=5e-4,
        batch_size=1,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def working_size(preset: str, height: int, width: int) -> tuple[int, int]:
    """(height, width) that an archive created with `preset` from such a video decodes at."""
    config = get_preset(preset).model_config(height, width)
    return config.height, config.width


def scaled_preset(preset: Preset, width_scale: float) -> Preset:
    """The same family with every channel count scaled (to span a rate-distortion curve)."""
    if width_scale <= 0:
        raise ConfigError(f"width scale must be positive, got {width_scale}")

    def scale(n: int) -> int:
        return max(1, round(n * width_scale))

    return replace(
        preset,
        channels=tuple(scale(c) for c in preset.channels),
        base_channels=scale(preset.base_channels),
        stem_hidden=scale(preset.stem_hidden),
    )
