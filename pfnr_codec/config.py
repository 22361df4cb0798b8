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

# Weight of the estimated bits per pixel in a session's loss (quality 4). Bunny, whole clip,
# 3 minutes each, bpp over x264-medium's bpp at the same PSNR, learned Laplace scales: lambda
# 0.001 5.3x, 0.003 3.7x, 0.01 3.1x, 0.03 2.9x (30.5, 31.0, 30.2, 28.9 dB): below 0.01 the extra
# bits buy little. With scales fitted at every step (rate.fitted_log_scale): 0.01 2.8x (29.96 dB
# at 0.156 bpp), 0.03 2.7x (28.26 dB at 0.095 bpp).
DEFAULT_RATE_LAMBDA = 0.01


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
    # The input family. "time": the frame time t = k / N, positional-encoded, through a masked MLP
    # stem (NeRV, PFNR). "latent": each session owns integer latent grids at the stem grid, one per
    # entry of `latent_steps` (a cell every `step` frames, linear in time between cells), read by a
    # masked 3x3 conv stem; plus, when `fine_block` is set, a grid of `fine_channels` at that
    # block's input resolution (a cell every `fine_step` frames), put before its input channels.
    input: str = "time"
    latent_steps: tuple[int, ...] = ()
    latent_channels: int = 8
    fine_block: int | None = None
    fine_channels: int = 4
    fine_step: int = 8
    # (1.5) Latent cells between frames follow the camera: each session stores every frame's
    # global position (motion.py), and a cell is shifted to the frame that reads it.
    follow_motion: bool = False

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
        if self.input not in INPUTS:
            raise ConfigError(f"model input must be one of {INPUTS}, got {self.input!r}")
        if self.input == "latent":
            if not self.latent_steps or min(self.latent_steps) < 1:
                raise ConfigError(
                    f"latent input needs positive latent steps, got {self.latent_steps}"
                )
            if min(self.latent_channels, self.fine_channels, self.fine_step) < 1:
                raise ConfigError(f"latent sizes must be positive, got {self}")
            if self.fine_block is not None and not 0 <= self.fine_block < len(self.strides):
                raise ConfigError(f"fine_block {self.fine_block} is not one of the model's blocks")
        elif self.fine_block is not None:
            raise ConfigError("fine latents need the latent input")
        elif self.follow_motion:
            raise ConfigError("follow_motion needs the latent input")

    @property
    def latent(self) -> bool:
        return self.input == "latent"

    def block_input_size(self, block: int) -> tuple[int, int]:
        """(height, width) of the feature map entering block `block`."""
        scale = math.prod(self.strides[:block])
        return self.base_height * scale, self.base_width * scale

    def block_input_channels(self, block: int) -> int:
        """Channels entering block `block`, fine latents included."""
        c_in = self.base_channels if block == 0 else self.channels[block - 1]
        return c_in + (self.fine_channels if block == self.fine_block else 0)

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
        if self.latent:
            count = len(self.latent_steps) * self.latent_channels * self.base_channels * 9
        else:
            count = 2 * self.pe_levels * self.stem_hidden
            count += self.stem_hidden * self.base_channels * self.base_height * self.base_width
        for i, (stride, c_out) in enumerate(zip(self.strides, self.channels, strict=True)):
            fso = self.fso_block == i
            c_in = self.block_input_channels(i)
            if not (fso and self.fso_only):
                count += c_out * stride**2 * c_in * 9
            if fso:
                count += 2 * c_in * c_out * 2 * self.fso_modes[0] * self.fso_modes[1]
        return count

    @property
    def macs_per_pixel(self) -> float:
        """Multiply-accumulates of decoding one output pixel: every convolution, linear layer,
        FSO channel mixing and the head, over the working size (FFTs and activations not
        counted: they are a few per cent)."""
        macs = 0
        if self.latent:
            inputs = len(self.latent_steps) * self.latent_channels
            macs += self.base_channels * inputs * 9 * self.base_height * self.base_width
        else:
            macs += 2 * self.pe_levels * self.stem_hidden
            macs += self.stem_hidden * self.base_channels * self.base_height * self.base_width
        for i, (stride, c_out) in enumerate(zip(self.strides, self.channels, strict=True)):
            h, w = self.block_input_size(i)
            c_in = self.block_input_channels(i)
            if not (self.fso_block == i and self.fso_only):
                macs += c_out * stride**2 * c_in * 9 * h * w
            if self.fso_block == i:  # complex mixing: 4 real MACs per kept mode and channel pair
                macs += 4 * c_in * c_out * 2 * self.fso_modes[0] * self.fso_modes[1]
        macs += self.channels[-1] * 3 * self.height * self.width
        return macs / (self.height * self.width)

    def latent_values(self, frames: int, scenes: tuple[int, ...] = (0,)) -> int:
        """Latent values a session of `frames` frames in `scenes` stores (0 for the time input)."""
        if not self.latent:
            return 0
        cells = self.base_height * self.base_width * self.latent_channels
        count = sum(latent_cells(frames, step, scenes) for step in self.latent_steps) * cells
        if self.fine_block is not None:
            h, w = self.block_input_size(self.fine_block)
            count += latent_cells(frames, self.fine_step, scenes) * h * w * self.fine_channels
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


INPUTS = ("time", "latent")
# Training's float types (precision.py); an encoder setting, never part of an archive.
PRECISIONS = ("auto", "float32", "bfloat16")


def scene_spans(frames: int, scenes: tuple[int, ...]) -> list[tuple[int, int]]:
    """[start, end) of each scene of a session of `frames` frames (`scenes`: their first frames)."""
    return list(zip(scenes, (*scenes[1:], frames), strict=True))


def latent_cells(frames: int, step: int, scenes: tuple[int, ...] = (0,)) -> int:
    """Cells of a latent grid with a cell every `step` frames of each scene (`scenes`: the first
    frame of each, from 0): the last frame of every scene always has one."""
    return sum(_scene_cells(end - start, step) for start, end in scene_spans(frames, scenes))


def _scene_cells(frames: int, step: int) -> int:
    return (frames - 1) // step + 1 + (1 if step > 1 and (frames - 1) % step else 0)


# Bounds on every field an archive header may give (docs/FORMAT.md, "Header keys"): far above any
# preset, low enough that nothing is allocated or looped over before the model is known to be sane.
INT_FIELD_BOUNDS = {
    "base_height": (1, 1024),
    "base_width": (1, 1024),
    "base_channels": (1, 4096),
    "stem_hidden": (1, 4096),
    "pe_levels": (1, 256),
    "linear_mask_block": (1, 64),
    "latent_channels": (1, 64),
    "fine_channels": (1, 64),
    "fine_step": (1, 1024),
}
LIST_FIELD_BOUNDS = {  # (min length, max length, min value, max value)
    "strides": (1, 8, 1, 8),
    "channels": (1, 8, 1, 4096),
    "fso_modes": (2, 2, 1, 64),
    "latent_steps": (0, 8, 1, 1024),
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
    "input",
    "latent_steps",
    "latent_channels",
    "fine_block",
    "fine_channels",
    "fine_step",
    "follow_motion",
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
    if key in ("fso_block", "fine_block"):
        if value is not None and (not _is_int(value) or not 0 <= value < 8):
            raise fail("null or an integer in 0..7")
        return value
    if key == "input":
        if value not in INPUTS:
            raise fail(f"one of {list(INPUTS)}")
        return value
    if key in ("fso_only", "follow_motion"):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    raise ArchiveError(f"model config has unknown key {key!r}")


@dataclass(frozen=True)
class Preset:
    """A model family plus the encoder defaults that go with it.

    `model` holds every `ModelConfig` field except the stem grid, which follows the first video's
    aspect ratio within `target_pixels`; `train` holds the `TrainSettings` defaults of the family.
    """

    name: str
    description: str
    target_pixels: int  # working-size budget (height x width), never above the source's
    model: dict[str, Any]
    train: dict[str, Any]

    def model_config(self, height: int, width: int) -> ModelConfig:
        """The model for a first video of `height` x `width` pixels."""
        base_h, base_w = base_grid(self.target_pixels, self.upscale, height, width)
        return ModelConfig(base_height=base_h, base_width=base_w, **self.model)

    @property
    def upscale(self) -> int:
        return math.prod(self.model["strides"])


def base_grid(target_pixels: int, upscale: int, height: int, width: int) -> tuple[int, int]:
    """The stem grid whose upscaled size keeps the video's aspect ratio within the pixel budget."""
    if height < 1 or width < 1:
        raise ConfigError(f"video size must be positive, got {height}x{width}")
    budget = min(target_pixels, height * width) / upscale**2
    base_w = max(1, math.floor(math.sqrt(budget * width / height)))
    base_h = max(1, round(base_w * height / width))
    return base_h, base_w


# The latent family: integer latent grids per session (a map per frame, per 4 and per 16 frames at
# the stem grid; a quarter-resolution map every 8 frames before the second block) whose cells follow
# the camera, a masked conv decoder with the f-NeRV block, weights and latents trained against
# their coded size (rate term).
_CPU_LATENT_MODEL = {
    "strides": (5, 2, 2),
    "channels": (48, 32, 16),
    "base_channels": 24,
    "stem_hidden": 64,
    "fso_modes": (4, 4),
    "input": "latent",
    "latent_steps": (1, 4, 16),
    "latent_channels": 8,
    "fine_block": 1,
    "fine_channels": 4,
    "fine_step": 8,
    # Cells follow the camera: hand-held cup.mp4, quality 4, 10 minutes, 25% fewer bits at +0.22
    # dB; bikes (pans with non-rigid motion) within noise (ablation_motion_*.md).
    "follow_motion": True,
}

# The latent family at 720p for a GPU: the cpu model's stem grid (9x16 cells) and latents, two
# more x2 blocks up to full resolution and wider blocks; the fine latent map enters at 1/8 of the
# width (block 2), where the cpu model's enters at 1/4 of its smaller frame.
_GPU_LATENT_MODEL = {
    **_CPU_LATENT_MODEL,
    "strides": (5, 2, 2, 2, 2),
    "channels": (96, 64, 48, 32, 24),
    "base_channels": 32,
    "fso_modes": (8, 8),
    "fine_block": 2,
}
# 1080p: the same widths, the second block upsamples x3 (the stem grid stays 9x16 cells).
_GPU_1080P_LATENT_MODEL = {**_GPU_LATENT_MODEL, "strides": (5, 3, 2, 2, 2)}
_GPU_TRAIN = {
    "capacity": 1.0,
    "bits": 6,
    "epochs": 300,
    "minutes": 30.0,  # whichever ends first
    "learning_rate": 1e-2,
    "batch_size": 2,
}

# Latents start near the answer: a short warm-up and Adam's usual momentum (0.9) train them
# faster than NeRV's 0.5 (bunny, 3 minutes: +0.4 dB at 20% fewer bits).
_LATENT_TRAIN = {"adam_beta1": 0.9, "warmup": 0.1}
# A quarter of the rates the latent family started with (1.5e-2, 0.1, 1e-2): at those, nearly
# every 10-minute session collapsed near the warm-up's peak and went on at a quarter after its
# rollback, having lost epochs to a training PSNR that stalled. At a quarter from the start:
# bikes +186.5% -> +127.5% BD-rate against x264 medium, box's qualities 4 and 5 +1.9 and +3.5 dB
# (rd_bikes_one_batch_rule.md against rd_bikes_former_lr.md; rd_ext_box.md against
# rd_ext_box_former_lr.md).
_CPU_LEARNING_RATES = {
    "learning_rate": 3.75e-3,
    "latent_learning_rate": 0.025,
    "rate_learning_rate": 2.5e-3,
}
# The frame-time family trains as pfnr 0.1 did: L1 + SSIM, no rate term, rounding at the end.
_FRAME_TIME_TRAIN = {
    "loss": "l1-ssim",
    "rate_lambda": 0.0,
    "mask_settle": 0.25,
    "quantize_aware": False,
}

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="for tests: the latent family, trains in seconds at about 32x48",
        target_pixels=32 * 48,
        model={
            "strides": (2, 2, 2),
            "channels": (24, 16, 12),
            "base_channels": 8,
            "stem_hidden": 32,
            "pe_levels": 16,
            "fso_modes": (2, 3),
            "input": "latent",
            "latent_steps": (1, 4),
            "latent_channels": 4,
            "fine_block": 1,
            "fine_channels": 2,
            "fine_step": 4,
            "follow_motion": True,
        },
        train={
            "capacity": 1.0,
            "bits": 6,
            "epochs": 40,
            "learning_rate": 2e-2,
            "batch_size": 4,
            **_LATENT_TRAIN,
        },
    ),
    "cpu": Preset(
        name="cpu",
        description="the default: latent family at about 180x320, minutes on a 2-core CPU",
        target_pixels=180 * 320,
        model=_CPU_LATENT_MODEL,
        train={
            "capacity": 1.0,
            "bits": 6,
            "epochs": 150,
            "minutes": 10.0,  # whichever ends first
            **_CPU_LEARNING_RATES,
            "batch_size": 2,
            **_LATENT_TRAIN,
        },
    ),
    "cpu-time": Preset(
        name="cpu-time",
        description="pfnr 0.1's default: frame-time input at about 180x320 (for comparison)",
        target_pixels=180 * 320,
        model={
            "strides": (5, 2, 2),
            "channels": (48, 32, 16),
            "base_channels": 24,
            "stem_hidden": 64,
            "pe_levels": 40,
            "fso_modes": (4, 4),
        },
        train={
            "capacity": 0.5,
            "bits": 6,
            "epochs": 150,
            "learning_rate": 1.5e-2,
            "batch_size": 2,
            **_FRAME_TIME_TRAIN,
        },
    ),
    "gpu": Preset(
        name="gpu",
        description="the latent family at 720x1280 for a GPU (the cpu model, two more blocks)",
        target_pixels=720 * 1280,
        model=_GPU_LATENT_MODEL,
        train={**_GPU_TRAIN, **_LATENT_TRAIN},
    ),
    "gpu-1080p": Preset(
        name="gpu-1080p",
        description="the latent family at 1080x1920 for a GPU",
        target_pixels=1080 * 1920,
        model=_GPU_1080P_LATENT_MODEL,
        train={**_GPU_TRAIN, **_LATENT_TRAIN},
    ),
    "paper": Preset(
        name="paper",
        description="720x1280, the PFNR paper's frame-time network, FSO in block 2; for a GPU",
        target_pixels=720 * 1280,
        model={
            "strides": (5, 2, 2, 2, 2),
            "channels": (112, 96, 96, 96, 96),
            "base_channels": 26,
            "stem_hidden": 512,
            "pe_levels": 80,
            "fso_modes": (8, 8),
        },
        train={
            "capacity": 0.3,
            "bits": 8,
            "epochs": 150,
            "learning_rate": 5e-4,
            "batch_size": 1,
            **_FRAME_TIME_TRAIN,
        },
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

    model = dict(preset.model)
    model["channels"] = tuple(scale(c) for c in model["channels"])
    for key in ("base_channels", "stem_hidden", "latent_channels", "fine_channels"):
        if key in model:
            model[key] = scale(model[key])
    return replace(preset, model=model)


QUALITIES = range(1, 8)
DEFAULT_QUALITY = 4
# Quality levels of a family trained against its coded size move lambda, not the network (at a
# fixed time budget a wider network runs fewer epochs: width-scaled quality 5 fell below quality 4
# on bunny). Each level up divides lambda by 3: about 1.5x the bits (DEFAULT_RATE_LAMBDA's runs).
LAMBDA_PER_QUALITY = 3.0


def check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or quality not in QUALITIES:
        raise ConfigError(f"quality must be an integer from 1 to 7, got {quality!r}")
    return quality


def trains_against_rate(preset: Preset) -> bool:
    """Whether the preset's sessions train with a rate term (then quality moves its lambda)."""
    return preset.train.get("rate_lambda", DEFAULT_RATE_LAMBDA) > 0


def quality_lambda(quality: int, base_lambda: float) -> float:
    """Lambda of quality level 1..7 for a family trained against rate; 4 is the preset's."""
    return base_lambda * LAMBDA_PER_QUALITY ** (DEFAULT_QUALITY - check_quality(quality))


def quality_width(quality: int) -> float:
    """Width scale of quality level 1..7 for a family without a rate term: each level up
    multiplies the weights of a new archive by about 2 (channels by sqrt 2); 4 is the preset."""
    return round(2 ** ((check_quality(quality) - DEFAULT_QUALITY) / 2), 4)
