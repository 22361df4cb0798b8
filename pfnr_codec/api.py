"""What the CLI and the benchmarks call: encode a video as a session, decode a session, inspect.

Every function takes paths and plain options, raises `PfnrError` subclasses on bad input and returns
dataclasses that turn into JSON with `to_dict()`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .archive import LoadedArchive, load_archive, new_header, parse_header
from .bitstream import pack_session, stream_category
from .config import (
    DEFAULT_QUALITY,
    DEFAULT_RATE_LAMBDA,
    ModelConfig,
    check_quality,
    get_preset,
    quality_lambda,
    quality_width,
    scaled_preset,
    trains_against_rate,
)
from .container import (
    FORMAT_VERSION,
    SessionChunk,
    append_session,
    archive_lock,
    read_archive,
)
from .entropy import DEFAULT_CODER, get_coder
from .errors import ArchiveError, ConfigError, DistributedError, InputError, UsageError
from .growth import check_store_size, growth_for, layer_widths
from .metrics import MS_SSIM_WINDOW, bpp, ms_ssim, psnr
from .model import PFNR
from .render import render_frames, resolve_device, session_weights
from .scenes import scene_starts
from .session_meta import SCENES_VERSION, SessionMeta
from .stamps import created_stamp, encode_time_entry, source_date_epoch
from .train import Progress, TrainSettings, fit_session
from .video import VideoInfo, channels_first, probe_video, read_video, resize_frames

SEED_STRIDE = 1_000_003  # session k of seed s trains from seed s * SEED_STRIDE + k


@dataclass(frozen=True)
class EncodeOptions:
    """How to encode one video. `preset`, `coder`, `width_scale` and `model` apply to new
    archives only; so does `quality` in a family without a rate term (where it sets widths)."""

    preset: str | None = None
    capacity: float | None = None
    bits: int | None = None
    epochs: int | None = None
    minutes: float | None = None
    frames: tuple[int, int | None] | None = None
    name: str | None = None
    device: str = "auto"
    seed: int = 0
    coder: str | None = None
    qat_epochs: int = 0
    quantize_aware: bool | None = None  # None: the preset's
    rate_lambda: float | None = None  # None: the preset's
    learning_rate: float | None = None
    batch_size: int | None = None  # frames per step of each process; None: the preset's
    loss: str | None = None  # None: the preset's
    growth: float | None = None  # None: the preset's
    quality: int | None = None  # 1..7 (config.quality_lambda / quality_width); None: 4
    # Aim the session at a size instead of a quality (one of the two; lambda is steered to it).
    target_bytes: int | None = None
    target_bpp: float | None = None  # bits per pixel at the working size, as reports show
    width_scale: float = 1.0  # times the quality's width (benchmarks size baselines with it)
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields for a new archive
    lock_wait: float = 0.0
    scene_cuts: bool = True  # latent grids follow the scene cuts found in the video
    precision: str = "auto"  # training's float type: auto, float32 or bfloat16 (precision.py)


@dataclass
class SessionReport:
    """One session as `encode` and `info` report it."""

    session: int
    name: str
    source: str
    frames: int
    fps: float
    psnr: float | None
    ms_ssim: float | None
    bytes: int
    bpp: float
    capacity: float
    bits: int
    new_weights: int
    reused_share: float
    encode_seconds: float | None
    epochs: int | None
    added_channels: int = 0  # channels the session added to the shared network (growth)
    scenes: int = 1  # scenes its latent grids follow (cuts found at encode + 1)
    recoveries: int | None = None  # rollbacks after a collapse while training (None: unrecorded)
    notes: tuple[str, ...] = ()  # what the encoder should be told about its budget
    parts: dict[str, int] = field(default_factory=dict)  # its bytes by part (`session_parts`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecodeResult:
    """Frames of one session plus the figures `decode` prints."""

    session: int
    frames: np.ndarray  # uint8 (T, H, W, 3)
    fps: float
    bytes: int
    bpp: float  # session bits / (N_s * H * W) at the working size
    seconds: float
    frames_per_second: float
    matches_encode: bool | None  # decoded bytes equal the ones fingerprinted at encode time
    psnr: float | None = None
    ms_ssim: float | None = None
    warnings: tuple[str, ...] = ()  # e.g. a reference that does not look like the source

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("frames")
        out["shape"] = list(self.frames.shape)
        return out


@dataclass
class ArchiveInfo:
    """What `pfnr info` shows."""

    path: str
    format_version: str
    tool_version: str
    preset: str
    coder: str
    working_size: list[int]
    model_weights: int
    sessions: list[SessionReport]
    file_bytes: int
    breakdown: dict[str, int]
    bpp: float  # file bits / all sessions' pixels at the working size
    free_share: dict[str, float] = field(default_factory=dict)  # per shared tensor

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sessions"] = [s.to_dict() for s in self.sessions]
        return out


def fingerprint(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


def train_settings(options: EncodeOptions, preset_name: str) -> TrainSettings:
    """The preset's training defaults, overridden by whatever the options set."""
    chosen = {
        "capacity": options.capacity,
        "bits": options.bits,
        "epochs": options.epochs,
        "learning_rate": options.learning_rate,
        "batch_size": options.batch_size,
        "quantize_aware": options.quantize_aware,
        "rate_lambda": options.rate_lambda,
        "loss": options.loss,
        "growth": options.growth,
        "minutes": options.minutes,
    }
    preset = get_preset(preset_name)
    values = dict(preset.train)
    if options.quality is not None and trains_against_rate(preset):
        base = values.get("rate_lambda", DEFAULT_RATE_LAMBDA)
        values["rate_lambda"] = quality_lambda(options.quality, base)
    values.update({k: v for k, v in chosen.items() if v is not None})
    if options.minutes is not None and options.epochs is None:
        values["epochs"] = TIME_BUDGET_EPOCHS  # --minutes is the budget: the time decides
    values.update(qat_epochs=options.qat_epochs, seed=options.seed, precision=options.precision)
    return TrainSettings(**values)


def _session_quality(options: EncodeOptions, preset_name: str) -> int | None:
    """The quality level a session of a rate-trained family was encoded at (None elsewhere:
    there the level is a property of the archive's widths)."""
    chosen_rate = (options.rate_lambda, options.target_bytes, options.target_bpp)
    if not trains_against_rate(get_preset(preset_name)) or any(x is not None for x in chosen_rate):
        return None
    return DEFAULT_QUALITY if options.quality is None else options.quality


def check_target(options: EncodeOptions) -> None:
    """A size target excludes the other rate settings and must be a positive number."""
    targets = [t for t in (options.target_bytes, options.target_bpp) if t is not None]
    if not targets:
        return
    if len(targets) > 1:
        raise ConfigError("give a target size or a target bpp, not both")
    if options.quality is not None or options.rate_lambda is not None:
        raise ConfigError("a target size picks the rate itself: drop --quality / rate lambda")
    if not 0 < targets[0] < math.inf:
        raise ConfigError(f"a target must be a positive number, got {targets[0]}")


def _aimed(
    settings: TrainSettings, options: EncodeOptions, frames: int, config: Any
) -> TrainSettings:
    """`settings` steered towards the options' target size, if any (bpp counts the session's
    frames at the working size, as the reports do)."""
    target: float | None = options.target_bytes
    if options.target_bpp is not None:
        target = options.target_bpp * frames * config.height * config.width / 8
    return settings if target is None else replace(settings, target_bytes=target)


def _check_same(option: str | None, stored: str, what: str, path: Path) -> None:
    if option is not None and option != stored:
        raise ConfigError(
            f"{path} was created with {what} {stored!r}; {what} {option!r} applies to new archives only"
        )


TIME_BUDGET_EPOCHS = 1_000_000  # the epoch cap when only minutes are given: out of reach
FEW_EPOCHS = 20  # a session that ends sooner is far below what its preset reaches
MIN_FREE_SHARE = 0.01  # below this, a model family that cannot grow refuses a new session


@dataclass
class _NextSession:
    """Everything a new session is trained against."""

    header: dict[str, Any]
    model: PFNR  # the session's own network, earlier sessions' weights frozen in it
    count: int  # sessions already in the archive
    preset: str
    settings: TrainSettings
    grow: tuple[int, ...]  # channels the session adds to each layer
    version: tuple[int, int]  # the file's format version (an append keeps it)


def _new_config(options: EncodeOptions, preset_name: str, height: int, width: int) -> Any:
    """The model of a new archive: the preset (at the chosen quality's widths in a family without
    a rate term), then any model overrides."""
    preset = get_preset(preset_name)
    quality = DEFAULT_QUALITY if options.quality is None else options.quality
    widths = 1.0 if trains_against_rate(preset) else quality_width(quality)
    preset = scaled_preset(preset, options.width_scale * widths)
    try:
        return replace(preset.model_config(height, width), **options.model)
    except TypeError as exc:
        raise ConfigError(f"unknown model setting: {exc}") from None


def _preflight(
    archive: Path, video: Path, options: EncodeOptions, height: int, width: int
) -> tuple[int, int]:
    """Every check that needs no training, before the lock is taken: settings in range (for the
    archive's preset), a known coder, and a working size the metrics can measure. Returns that
    working size (height, width)."""
    if archive.exists():
        header = read_archive(archive).header
        config, _ = parse_header(header, archive)
        preset_name = str(header.get("preset", "cpu"))
    else:
        preset_name = options.preset or "cpu"
        config = _new_config(options, preset_name, height, width)
        get_coder(options.coder or DEFAULT_CODER)
    train_settings(options, preset_name)
    if min(config.height, config.width) < MS_SSIM_WINDOW:
        raise InputError(
            f"{video.name} is {width}x{height}: its working size {config.width}x{config.height} "
            f"is under {MS_SSIM_WINDOW} pixels a side; pfnr needs larger frames"
        )
    return config.height, config.width


def _training_frames(
    archive: Path, video: Path, options: EncodeOptions
) -> tuple[np.ndarray, VideoInfo]:
    """The frames to train on, uint8 (T, 3, H, W) at the working size, resized while they are
    decoded (a long video is never held whole at its own resolution), after every check
    `_preflight` makes."""
    probed = probe_video(video)
    size = _preflight(archive, video, options, probed.height, probed.width)
    frames, info = read_video(video, options.frames, size)
    if (info.height, info.width) != (probed.height, probed.width):  # the container misstated it
        size = _preflight(archive, video, options, info.height, info.width)
        frames, info = read_video(video, options.frames, size)
    return channels_first(frames), info


def _next_session(
    archive: Path, options: EncodeOptions, height: int, width: int, device: torch.device
) -> _NextSession:
    """Open `archive` (or plan a new one) and lay out the network of its next session."""
    if not archive.exists():
        preset_name = options.preset or "cpu"
        config = _new_config(options, preset_name, height, width)
        coder = options.coder or DEFAULT_CODER
        get_coder(coder)
        settings = train_settings(options, preset_name)
        header = new_header(preset_name, config, coder)
        zero = (0,) * len(layer_widths(config))
        return _NextSession(
            header, PFNR(config).to(device), 0, preset_name, settings, zero, FORMAT_VERSION
        )
    loaded = load_archive(archive, device)
    preset_name = str(loaded.header.get("preset", "cpu"))
    _check_same(options.preset, preset_name, "preset", archive)
    _check_same(options.coder, loaded.header["coder"], "coder", archive)
    if options.width_scale != 1.0 or options.model:
        raise ConfigError(f"{archive} exists: model settings apply to new archives only")
    if options.quality is not None and not trains_against_rate(get_preset(preset_name)):
        raise ConfigError(
            f"{archive} exists: in preset {preset_name!r} --quality sets network widths, which "
            "apply to new archives only"
        )
    settings = train_settings(options, preset_name)
    grow = _growth(loaded, settings, archive)
    check_store_size(loaded.config, [*loaded.grows, grow], str(archive))
    model = loaded.store.view(loaded.session_count + 1, grow)
    return _NextSession(
        loaded.header,
        model,
        loaded.session_count,
        preset_name,
        settings,
        grow,
        loaded.contents.version,
    )


def _growth(loaded: LoadedArchive, settings: TrainSettings, archive: Path) -> tuple[int, ...]:
    """Channels the next session adds: none while `capacity` of its network is still free;
    otherwise `growth` of the base widths (latent family), or a clear refusal (frame-time family,
    which cannot grow) once almost nothing is free."""
    zero = (0,) * len(layer_widths(loaded.config))
    layers = loaded.store.base.masked_weights().values()
    free = sum(int((~mw.used).sum()) * mw.expand for mw in layers)
    free_share = free / max(1, sum(mw.weight.numel() for mw in layers))
    if free_share >= settings.capacity - 1e-9:
        return zero
    if loaded.config.latent:
        if settings.growth <= 0:
            raise UsageError(
                f"{archive} is full ({free_share:.1%} of the shared weights are free) and growth "
                "is off; allow growth or start a new archive"
            )
        return growth_for(loaded.config, settings.growth)
    if free_share < MIN_FREE_SHARE:
        raise UsageError(
            f"{archive} is full: {free_share:.1%} of its shared weights are free, and its model "
            "family (frame-time input) cannot grow; start a new archive (the default preset grows)"
        )
    return zero


def encode_video(
    archive: Path,
    video: Path,
    options: EncodeOptions,
    progress: Callable[[Progress], None] | None = None,
) -> SessionReport | None:
    """Fit `video` as the next session of `archive` (created if missing) and append it atomically.

    Under torchrun every rank calls this; they train the session together, and rank 0 alone locks
    and writes the archive and gets the report (the other ranks get None).
    """
    if options.quality is not None:
        check_quality(options.quality)  # a bad level fails before anything is read or locked
    check_target(options)
    source_date_epoch()  # a malformed SOURCE_DATE_EPOCH too
    world = distributed.world_from_env()
    device = distributed.rank_device(world, resolve_device(options.device))
    distributed.join(world, device)
    frames, info = distributed.read_once_per_host(
        world, lambda: _training_frames(archive, video, options)
    )
    start = time.monotonic()
    with _encode_lock(archive, options.lock_wait, world):
        nxt = _next_session(archive, options, info.height, info.width, device)
        header, model, count = nxt.header, nxt.model, nxt.count
        config = model.config
        if frames.shape[2:] != (config.height, config.width):  # the archive changed meanwhile
            size = (config.height, config.width)
            frames = channels_first(read_video(video, options.frames, size)[0])
        settings = _aimed(nxt.settings, options, len(frames), config)
        scenes = _scenes(frames, config, nxt.version) if options.scene_cuts else (0,)
        targets = frames.transpose(0, 2, 3, 1)  # (T, H, W, 3), what the session is measured on
        target_tensor = torch.from_numpy(frames)
        if not world.active:  # ranks keep the frames in host memory and move batches
            target_tensor = target_tensor.to(device)
        fit = fit_session(
            model,
            target_tensor,
            settings,
            options.seed * SEED_STRIDE + count + 1,
            progress if world.is_main else None,
            world,
            scenes,
        )
        if not world.is_main:
            return None
        masks = {name: t.mask for name, t in fit.tensors.items()}
        weights = session_weights(model, masks)
        decoded = render_frames(model, weights, fit.head)
        exact = render_frames(model, weights, fit.head, exact=True)
        layers = model.masked_weights()
        active = sum(int(t.mask.sum()) * layers[n].expand for n, t in fit.tensors.items())
        reused = sum(
            int((t.mask & t.used_before).sum()) * layers[n].expand for n, t in fit.tensors.items()
        )
        start_frame = options.frames[0] if options.frames else 0
        meta = {
            "name": options.name or video.stem,
            "source": video.name,
            "source_frames": [start_frame, start_frame + len(targets)],
            "frames": len(targets),
            "fps": info.fps,
            "original_size": [info.height, info.width],
            "capacity": settings.capacity,
            "bits": settings.bits,
            "quality": _session_quality(options, nxt.preset),
            "rate_lambda": fit.rate_lambda,
            "grow": list(nxt.grow),
            **({"scenes": list(scenes)} if len(scenes) > 1 else {}),
            "psnr": psnr(decoded, targets),
            "ms_ssim": ms_ssim(decoded, targets),
            "psnr_float": fit.psnr_float,
            "epochs": fit.epochs,
            "recoveries": fit.recoveries,
            "seed": options.seed,
            "new_weights": sum(int(t.codes.size) for t in fit.tensors.values()),
            "active_weights": active,
            "reused_weights": reused,
            "sha256": fingerprint(decoded),
            "sha256_exact": fingerprint(exact),
            "device": device.type,
            "created": created_stamp(),
        }
        streams = pack_session(fit, get_coder(header["coder"]), nxt.version)
        elapsed = time.monotonic() - start
        meta |= encode_time_entry(elapsed)
        SessionMeta.from_dict(meta, "new session meta")  # what readers will check
        contents = append_session(archive, header, SessionChunk(meta, streams), count)
    report = _session_report(
        count + 1,
        contents.sessions[count],
        contents.session_bytes[count],
        config,
        nxt.grow,
        contents.version,
    )
    notes = _budget_notes(settings, fit.epochs) + _target_note(settings, report.bytes)
    if info.bit_depth > 8:
        notes += (f"the source has {info.bit_depth}-bit samples; pfnr codes 8-bit RGB",)
    return replace(report, notes=notes, encode_seconds=round(elapsed, 3))


def _scenes(frames: np.ndarray, config: ModelConfig, version: tuple[int, int]) -> tuple[int, ...]:
    """Where the session's scenes start, for latent grids that follow them (files from 1.3 on;
    an append to an older file keeps what that version defines: one scene)."""
    if not config.latent or version < SCENES_VERSION:
        return (0,)
    return scene_starts(frames)


@contextmanager
def _encode_lock(archive: Path, wait: float, world: distributed.World) -> Iterator[None]:
    """The archive's lock, held by rank 0 alone; the other ranks read the archive only once rank 0
    holds it, and give up when rank 0 could not take it."""
    if not world.active:
        with archive_lock(archive, wait=wait):
            yield
        return
    if not world.is_main:
        if not distributed.from_main(world, 0):
            raise DistributedError(f"rank 0 could not lock {archive}; it says why")
        yield
        return
    with ExitStack() as stack:
        try:
            stack.enter_context(archive_lock(archive, wait=wait))
        except BaseException:
            distributed.from_main(world, 0)
            raise
        distributed.from_main(world, 1)
        yield


def _budget_notes(settings: TrainSettings, epochs: int) -> tuple[str, ...]:
    """Say when the time cap cut an epoch budget short, and when a session got very few epochs."""
    notes = []
    timed_out = settings.minutes is not None and epochs < settings.epochs
    if timed_out and settings.epochs < TIME_BUDGET_EPOCHS:
        notes.append(
            f"the {settings.minutes:g}-minute cap ended training after {epochs} of "
            f"{settings.epochs} epochs (--minutes sets the budget)"
        )
    if epochs < min(FEW_EPOCHS, settings.epochs):
        notes.append(
            f"only {epochs} epochs ran: quality is far below what this preset reaches; give "
            "more --minutes (or a faster device)"
        )
    return tuple(notes)


def _target_note(settings: TrainSettings, size: int) -> tuple[str, ...]:
    """How close a session aimed at a size landed."""
    if settings.target_bytes is None:
        return ()
    miss = size / settings.target_bytes - 1
    return (f"aimed at {settings.target_bytes:,.0f} bytes, took {size:,} ({miss:+.1%})",)


def _session_report(
    number: int,
    chunk: SessionChunk,
    size: int,
    config: Any,
    grow: tuple[int, ...],
    version: tuple[int, int],
) -> SessionReport:
    meta = SessionMeta.from_dict(chunk.meta, f"session {number} meta")
    active = max(1, meta.active_weights or 0)
    parts = session_parts(chunk, size)
    return SessionReport(
        session=number,
        name=meta.name or "",
        source=meta.source or "",
        frames=meta.frames,
        fps=meta.fps or 0.0,
        psnr=meta.psnr,
        ms_ssim=meta.ms_ssim,
        bytes=size,
        bpp=bpp(size, meta.frames, config.height, config.width),
        capacity=meta.capacity or 0.0,
        bits=meta.bits or 0,
        new_weights=meta.new_weights or 0,
        reused_share=(meta.reused_weights or 0) / active,
        encode_seconds=meta.encode_seconds,
        epochs=meta.epochs,
        added_channels=sum(grow),
        scenes=len(meta.scenes_in(version)),
        recoveries=meta.recoveries,
        parts=parts,
    )


def session_parts(chunk: SessionChunk, size: int) -> dict[str, int]:
    """A session's `size` bytes by part: its streams by category (weights, scales, masks, heads,
    latents), and what is left of its chunk (metadata, framing) as session_meta."""
    parts = {"weights": 0, "masks": 0, "scales": 0, "heads": 0}
    for name, data in chunk.streams.items():
        category = stream_category(name)
        parts[category] = parts.get(category, 0) + len(data)
    parts["session_meta"] = size - sum(len(data) for data in chunk.streams.values())
    return parts


def shown_parts(parts: dict[str, int]) -> dict[str, int]:
    """A session's parts as reports show them: weights with their scales, metadata as other."""
    return {
        "weights": parts.get("weights", 0) + parts.get("scales", 0),
        "latents": parts.get("latents", 0),
        "masks": parts.get("masks", 0),
        "heads": parts.get("heads", 0),
        "other": parts.get("session_meta", 0),
    }


def _reference_frames(
    reference: Path, meta: SessionMeta, start: int, end: int, height: int, width: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The source frames a decoded range corresponds to, at the decoded size, and warnings when
    the reference does not look like the session's source (another size and another name)."""
    offset = meta.source_frames[0] if meta.source_frames else 0
    frames, info = read_video(reference, (offset + start, offset + end))
    warnings = []
    size = (info.height, info.width)
    if meta.original_size is not None and size != tuple(meta.original_size):
        source = f"the session's source {meta.source!r}" if meta.source else "the session's source"
        warnings.append(
            f"--reference {reference.name} is {size[1]}x{size[0]} but {source} was "
            f"{meta.original_size[1]}x{meta.original_size[0]}: PSNR compares different videos"
        )
    return resize_frames(frames, height, width), tuple(warnings)


def _check_fingerprint(
    frames: np.ndarray,
    exact: bool,
    meta: SessionMeta,
    render_exact: Callable[[], np.ndarray],
    where: str,
) -> bool | None:
    """Whether a whole session's decoded `frames` are the bytes fingerprinted at encode time.

    float32 renders differ between devices and instruction sets by a level at a few pixels, and
    so may a payload changed with its CRC recomputed: the size of a difference cannot tell the two
    apart. float64 renders are the same bytes everywhere, so a float32 mismatch is settled by the
    float64 fingerprint: if that matches, the difference is rendering noise (False); if not, the
    archive content is not what was encoded (ArchiveError). None: the archive stores no fingerprint.
    """
    expected = meta.sha256_exact if exact else meta.sha256
    if expected is not None and fingerprint(frames) == expected:
        return True
    if meta.sha256_exact is None:  # nothing device-independent to settle it with
        return None if expected is None else False
    if fingerprint(render_exact()) != meta.sha256_exact:
        raise ArchiveError(
            f"{where}: archive content does not match what was encoded (the decoded frames "
            "differ from the fingerprint stored at encode time, also in float64 rendering, which "
            "is the same on every device: the archive was altered after encoding, its CRCs "
            "recomputed, or written by a faulty encoder)"
        )
    return False


MAX_DECODE_BYTES = 8 << 30  # uint8 frames one decode call may hold (working + output size)
DEFAULT_FPS = 25.0  # for sessions whose metadata has no frame rate


def decode_session(
    archive: Path,
    session: int,
    *,
    frames: tuple[int, int | None] | None = None,
    size: str = "original",
    exact: bool = False,
    device: str = "auto",
    reference: Path | None = None,
) -> DecodeResult:
    """Frames of session `session` (1-based), at the working or the original size."""
    if size not in ("original", "working"):
        raise ConfigError(f"size must be 'original' or 'working', got {size!r}")
    loaded = load_archive(archive, resolve_device(device), upto=session)
    config = loaded.config
    loaded.session(session)  # a UsageError for a session the archive does not hold
    meta = loaded.metas[session - 1]
    total = meta.frames
    start, end = frames if frames else (0, None)
    end = total if end is None else end
    if not 0 <= start < end <= total:
        raise InputError(f"frames {start}:{end} outside session {session} ({total} frames)")
    working = (config.height, config.width)
    height, width = meta.size(working) if size == "original" else working
    needed = (end - start) * 3 * (config.height * config.width + height * width)
    if needed > MAX_DECODE_BYTES:
        raise ArchiveError(
            f"{archive}: decoding frames {start}:{end} of session {session} at {width}x{height} "
            f"needs {needed / 2**30:.1f} GiB of frames, more than the {MAX_DECODE_BYTES >> 30} GiB "
            "one decode may hold; decode a smaller frame range"
        )
    began = time.perf_counter()
    model = loaded.session_model(session)
    weights = session_weights(model, loaded.masks[session - 1])
    head = loaded.heads[session - 1]
    out = render_frames(model, weights, head, start, end, exact)
    seconds = time.perf_counter() - began
    matches = None
    if (start, end) == (0, total):

        def render_exact() -> np.ndarray:
            return out if exact else render_frames(model, weights, head, exact=True)

        matches = _check_fingerprint(
            out, exact, meta, render_exact, f"{archive}: session {session}"
        )
    if (height, width) != working:
        out = resize_frames(out, height, width)
    size_bytes = loaded.contents.session_bytes[session - 1]
    result = DecodeResult(
        session=session,
        frames=out,
        fps=meta.fps or DEFAULT_FPS,
        bytes=size_bytes,
        bpp=bpp(size_bytes, total, config.height, config.width),
        seconds=seconds,
        frames_per_second=(end - start) / max(seconds, 1e-9),
        matches_encode=matches,
    )
    if reference is not None:
        ref, result.warnings = _reference_frames(
            reference, meta, start, end, out.shape[1], out.shape[2]
        )
        result.psnr, result.ms_ssim = psnr(out, ref), ms_ssim(out, ref)
    return result


def inspect_archive(archive: Path) -> ArchiveInfo:
    """Everything `pfnr info` shows, from the file alone."""
    loaded = load_archive(archive, torch.device("cpu"))
    contents, config = loaded.contents, loaded.config
    sessions = [
        _session_report(
            i + 1, chunk, contents.session_bytes[i], config, loaded.grows[i], contents.version
        )
        for i, chunk in enumerate(contents.sessions)
    ]
    breakdown = {"header": contents.header_bytes, "weights": 0, "masks": 0, "scales": 0, "heads": 0}
    for report in sessions:
        for part, size in report.parts.items():
            breakdown[part] = breakdown.get(part, 0) + size
    pixels = sum(s.frames for s in sessions) * config.height * config.width
    return ArchiveInfo(
        path=str(archive),
        format_version=".".join(map(str, contents.version)),
        tool_version=str(contents.header.get("tool_version", "")),
        preset=str(contents.header.get("preset", "")),
        coder=loaded.header["coder"],
        working_size=[config.height, config.width],
        model_weights=loaded.store.stored_weights(),
        sessions=sessions,
        file_bytes=contents.file_bytes,
        breakdown=breakdown,
        bpp=contents.file_bytes * 8 / pixels if pixels else 0.0,
        free_share=loaded.store.free_share(),
    )
