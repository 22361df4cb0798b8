"""Fitting one session into the shared network.

A session trains fresh free weights, fresh scores and its own head (its output layer and, in the latent
family, its latent grids, which start as a projection of the downsampled frames so that content is
there from the first step) with a fresh Adam; weights of earlier sessions are read from frozen buffers
and cannot move. The loss is the distortion (MSE by default: PSNR is what users measure) plus, with
`rate_lambda`, lambda x the estimated bits per pixel of what the session stores (`rate.RateModel`). Training runs a warm-up then a cosine schedule
under a budget in epochs and/or minutes, watches for collapse (NaN or PSNR falling off a cliff) and rolls
back with a lower learning rate. The scores choose the session's mask only early on: after `mask_settle`
of the main phase the mask is fixed and the rest of the time polishes that subnetwork (a mask that keeps
changing makes weights switch in and out until the end; fixing it at a quarter of a 3-minute bunny
session gave +0.7 dB). With `quantize_aware`, training then runs through the weights as they will be
stored, with learned steps. At the end the last sound state's mask is the one stored, the newly claimed
weights are quantized (optionally after a short quantization-aware fine-tune), and the quantized values
are frozen for good.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from . import distributed, interrupt
from .config import DEFAULT_RATE_LAMBDA, PRECISIONS
from .distributed import SINGLE, World
from .errors import ConfigError
from .loss import reconstruction_loss
from .model import PFNR, Head, MaskedWeight
from .motion import global_positions
from .precision import autocast, training_dtype
from .quant import quantize, quantize_with_scales
from .rate import RateModel, rate_weight
from .video import unit_float

COLLAPSE_DROP_DB = 4.0  # a batch this far below its frames' PSNR at their last visit fell
# A collapse: this many batches in a row fell (or any loss is not finite). One batch alone is noise:
# bikes, quality 5, batches of 2, 10 minutes, the worst batch of each epoch lies 0.3-3.4 dB below
# its frames' last visit, and a single 4 dB dip rolled back sessions (qualities 2 and 5 of
# rd_bikes_one_batch_rule.md) and trained the rest at a quarter of the learning rate.
COLLAPSE_BATCHES = 3
RECOVERY_LR_FACTOR = 0.25  # each rollback divides the learning rate by four
MAX_RECOVERIES = 10
LOSSES = ("mse", "l1-ssim")
LATENT_INIT_GAIN = 8.0  # downsampled frame - 0.5 (within +-0.5) -> latents within about +-4 steps


@dataclass(frozen=True)
class TrainSettings:
    """Encoder-only settings: they shape training, never the archive's format."""

    capacity: float = 0.3
    bits: int = 8
    epochs: int = 150
    minutes: float | None = None
    learning_rate: float = 5e-3
    latent_learning_rate: float = 0.1  # latents move in whole steps: they need larger updates
    rate_learning_rate: float = 1e-2  # the rate model's learned steps and Laplace scales
    warmup: float = 0.2
    adam_beta1: float = 0.5  # NeRV's reference setting
    batch_size: int = 4
    qat_epochs: int = 0
    seed: int = 0
    mask_settle: float = 0.3  # share of the main phase after which the session's mask is fixed
    quantize_aware: bool = True  # train through the quantized weights once the mask is fixed
    loss: str = "mse"
    rate_lambda: float = DEFAULT_RATE_LAMBDA  # weight of the estimated bits per pixel in the loss
    # Bytes the session should take: from `rate_lambda`, lambda is steered after every quantized
    # epoch towards the size the estimate is heading for (`predicted_bytes`, `steer_rate`).
    # None: lambda stays put.
    target_bytes: float | None = None
    growth: float = 0.25  # share of the base widths a session adds when its network is full
    precision: str = "auto"  # float type of the forward passes (precision.py); decoding ignores it

    def __post_init__(self) -> None:
        if not 0.0 < self.capacity <= 1.0:
            raise ConfigError(f"capacity must be in (0, 1], got {self.capacity}")
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"bits must be between 2 and 8, got {self.bits}")
        if self.epochs < 1 or self.batch_size < 1 or self.qat_epochs < 0:
            raise ConfigError("epochs and batch size must be >= 1, qat epochs >= 0")
        if self.minutes is not None and not 0 < self.minutes < math.inf:
            raise ConfigError(f"minutes must be positive and finite, got {self.minutes}")
        if not 0.0 < self.mask_settle <= 1.0:
            raise ConfigError(f"mask settle must be in (0, 1], got {self.mask_settle}")
        rates = (self.learning_rate, self.latent_learning_rate, self.rate_learning_rate)
        if not all(rate > 0 for rate in rates):
            raise ConfigError(f"learning rates must be positive, got {rates}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if not 0.0 <= self.growth <= 4.0:
            raise ConfigError(f"growth must be in [0, 4], got {self.growth}")
        if not 0.0 <= self.rate_lambda < math.inf:
            raise ConfigError(f"rate lambda must be finite and >= 0, got {self.rate_lambda}")
        if self.target_bytes is not None:
            if not 0 < self.target_bytes < math.inf:
                raise ConfigError(f"target size must be positive, got {self.target_bytes}")
            if not self.rate_lambda > 0:
                raise ConfigError("a target size needs a model family trained against its rate")


@dataclass(frozen=True)
class Progress:
    """What a progress bar shows after each epoch."""

    phase: str  # "train" or "finetune"
    epoch: int
    epochs: int
    loss: float
    psnr: float
    learning_rate: float
    recoveries: int
    # The rate model's estimate of the weights and latents the session will store, once its
    # weights train through their quantized values (None before, and without a rate model).
    estimated_bytes: float | None = None


@dataclass
class TensorCodes:
    """What one shared tensor stores for one session."""

    mask: Tensor  # bool, mask shape: this session's mask
    used_before: Tensor  # bool, mask shape: union of earlier sessions' masks
    codes: np.ndarray  # int32, one per newly claimed weight, in row-major order
    scales: np.ndarray  # float32, one per quantization group


@dataclass
class SessionFit:
    """The outcome of `fit_session`: everything the archive needs, plus figures for the report."""

    tensors: dict[str, TensorCodes]
    head: Head  # its latents hold the integers the archive stores
    psnr_float: float
    epochs: int
    recoveries: int
    history: list[Progress] = field(default_factory=list)
    rate_lambda: float = 0.0  # lambda at the end of training (steered when aiming at a size)


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class _Phase:
    """One pass of the training loop: what it trains, for how long, through which weights."""

    name: str  # "train" or "finetune", as progress reports it
    param_groups: list[tuple[list[Tensor], float]]  # (params, learning rate) pairs
    learning_rate: float  # the schedule's peak, for progress reports
    epochs: int
    minutes: float | None
    weights: Callable[[], dict[str, Tensor] | None]  # None: the model's own masked forward
    warmup: float
    settle_masks: float | None = None  # fix the session's masks after this share of the epochs
    # Once the masks are fixed, train through the weights as they will be stored (learned steps,
    # straight-through rounding): the rounding is learned, not suffered at the end.
    quantize_settled: bool = False
    weights_quantized: bool = False  # `weights` are already the stored ones: count their bits


class CollapseWatch:
    """Tells a collapse from a noisy batch: a non-finite loss, or `COLLAPSE_BATCHES` batches in a
    row that each fell `COLLAPSE_DROP_DB` below their frames' last visit."""

    def __init__(self) -> None:
        self.fallen = 0  # batches in a row that fell

    def collapsed(self, finite: bool, fell: bool) -> bool:
        self.fallen = self.fallen + 1 if fell else 0
        return not finite or self.fallen >= COLLAPSE_BATCHES


def psnr_from_mse(mse: float) -> float:
    return 100.0 if mse <= 1e-10 else -10.0 * math.log10(mse)


def learning_rate_at(progress: float, base: float, warmup: float) -> float:
    """Linear warm-up over the first `warmup` fraction, then cosine decay to zero."""
    if progress < warmup:
        return base * (progress + 1e-3) / warmup
    rest = (progress - warmup) / max(1e-9, 1 - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, rest)))


def begin_session(
    model: PFNR,
    settings: TrainSettings,
    session_seed: int,
    frames: Tensor,
    scenes: tuple[int, ...] = (0,),
) -> Head:
    """Fresh free weights, scores and head for a session of `frames` (T, 3, H, W) in `scenes`,
    drawn from the session's own seed; latent grids start as a projection of the frames."""
    generator = torch.Generator().manual_seed(session_seed)
    torch.manual_seed(session_seed)
    for mw in model.masked_weights().values():
        mw.reset_session(generator, settings.capacity)
    return start_head(model, frames, generator, scenes)


def start_head(
    model: PFNR, frames: Tensor, generator: torch.Generator, scenes: tuple[int, ...] = (0,)
) -> Head:
    """A fresh head for `frames` (T, 3, H, W) in `scenes`. The per-frame grid and the fine grid
    start as a fixed random projection of each cell's frame, area-downsampled to the grid (content
    from the first step); slower grids start at zero and learn only what the fast ones cannot say,
    which measured cheaper in bits than starting every grid from the frames."""
    device = next(model.buffers()).device
    head = model.new_head(frames.shape[0], scenes)
    if model.config.follow_motion:
        head.follow(torch.from_numpy(global_positions(frames.cpu().numpy(), scenes)))
    with torch.no_grad():
        for grid in head.grids().values():
            if grid.step != 1 and grid is not head.fine:
                continue
            channels, height, width = grid.values.shape[1:]
            projection = torch.randn(channels, 3, generator=generator)
            if channels >= 3:  # orthonormal columns: the three colours stay apart
                projection = torch.linalg.qr(projection)[0]
            small = F.adaptive_avg_pool2d(
                unit_float(frames[grid.cell_frames().to(frames.device)].cpu()), (height, width)
            )
            grid.values.copy_(
                LATENT_INIT_GAIN * torch.einsum("tchw,kc->tkhw", small - 0.5, projection)
            )
    return head.to(device)


SESSION_META_BITS = 8 * 768  # a session's metadata and stream table in format 1.2: 640-750 bytes


def _side_bits(model: PFNR, head: Head) -> float:
    """Bits a session stores beside its codes and latents: float32 scales, the head's float32
    weights and its metadata (masks are left out: at capacity 1 they are constant streams)."""
    groups = sum(mw.n_groups for mw in model.masked_weights().values())
    return 32.0 * (groups + head.conv.weight.numel() + head.conv.bias.numel()) + SESSION_META_BITS


class _StepLoss(torch.nn.Module):
    """One step's forward pass and loss as a module, so that DistributedDataParallel sees every
    parameter the loss uses (the rate term's included) inside its forward."""

    def __init__(self, trainer: _Trainer) -> None:
        super().__init__()
        self.model, self.head = trainer.model, trainer.head
        self.rate = trainer.rate
        self.trainer = trainer

    def forward(
        self,
        indices: Tensor,
        target: Tensor,
        weights: Callable[[], dict[str, Tensor] | None],
        quantized: bool,
    ) -> tuple[Tensor, Tensor]:
        trainer = self.trainer
        with autocast(trainer.compute_dtype, trainer.device):
            features = self.model.features(indices, self.head, weights())
        output = self.head(features.to(self.head.conv.weight.dtype))  # the head and loss unchanged
        return output, trainer.loss(output, target, quantized)


class _Trainer:
    """One training loop with rollback; shared by the main phase and the fine-tune phase."""

    def __init__(
        self,
        model: PFNR,
        head: Head,
        frames: Tensor,
        settings: TrainSettings,
        rate: RateModel | None = None,
        world: World = SINGLE,
    ) -> None:
        self.model, self.head, self.frames, self.settings = model, head, frames, settings
        self.rate, self.world = rate, world
        self.device = next(model.buffers()).device  # frames may stay in host memory
        self.compute_dtype = training_dtype(settings.precision, self.device)  # None: float32
        self.estimated_bytes: float | None = None  # the session's size if it ended now
        self.estimates: list[float] = []  # estimated_bytes after each quantized epoch
        self.pixels = frames[0].numel() // 3 * frames.shape[0]
        self.rate_lambda = settings.rate_lambda  # steered towards settings.target_bytes
        self.indices = torch.arange(frames.shape[0], device=self.device)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.recoveries = 0
        self.history: list[Progress] = []
        self.masks: dict[str, Tensor] | None = None  # the session's masks, once fixed

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model, self.head] + ([self.rate] if self.rate is not None else [])

    def _state(self) -> list[dict]:
        return [copy.deepcopy(m.state_dict()) for m in self._modules()]

    def _load(self, state: list[dict]) -> None:
        for module, saved in zip(self._modules(), state, strict=True):
            module.load_state_dict(saved)

    def _fix_masks(self) -> bool:
        """Stop the scores from moving the mask: the rest of training polishes a fixed subnetwork.

        True when this call fixed them (the first time).
        """
        fixed = False
        for mw in self.model.masked_weights().values():
            if mw.fixed_mask is None:
                mw.fixed_mask = mw.session_mask().clone()
                fixed = True
        self.masks = {n: mw.session_mask() for n, mw in self.model.masked_weights().items()}
        return fixed

    def loss(self, output: Tensor, target: Tensor, weights_quantized: bool) -> Tensor:
        """Distortion, plus lambda x estimated bits per pixel of what the session stores."""
        if self.settings.loss == "mse":
            loss = F.mse_loss(output, target)
        else:
            loss = reconstruction_loss(output, target)
        factor = rate_weight(self.pixels, self.rate_lambda)
        if self.rate is not None and factor:
            bits = self.rate.latent_bits(self.head)
            if weights_quantized and self.masks is not None:
                bits = bits + self.rate.weight_bits(self.model, self.masks)
            loss = loss + factor * bits
        return loss

    @torch.no_grad()
    def evaluate(self, weights: Callable[[], dict[str, Tensor] | None]) -> float:
        """Mean per-frame PSNR of the current state (as `metrics.psnr` reports decoded frames)."""
        n, batch, world = self.frames.shape[0], self.settings.batch_size, self.world
        total = 0.0
        for lo in range(world.rank * batch, n, batch * world.size):  # each rank its own batches
            indices = self.indices[lo : lo + batch]
            output = self.model(indices, self.head, weights())
            target = unit_float(self.frames[lo : lo + batch].to(self.device))
            per_frame = ((output.clamp(0, 1) - target) ** 2).flatten(1).mean(1)
            total += sum(psnr_from_mse(float(mse)) for mse in per_frame)
        total = distributed.all_sum(world, [total])[0]
        return total / n if math.isfinite(total) else -math.inf

    def _batch(self, order: Tensor, step: int) -> Tensor:
        """Frame indices this rank trains on at `step` of an epoch in `order`. A single process
        takes the next `batch_size` frames; each of N ranks takes `batch_size` of the next
        N x `batch_size` (wrapping around at the end, so every rank always has a full batch)."""
        batch, world = self.settings.batch_size, self.world
        if not world.active:
            return order[step * batch : (step + 1) * batch]
        start = (step * world.size + world.rank) * batch
        positions = torch.arange(start, start + batch, device=order.device) % order.shape[0]
        return order[positions]

    def run(self, phase: _Phase, on_progress: ProgressCallback | None) -> float:
        """Train the phase's params; leave the model in its last sound state and return its PSNR.

        A state saved at the end of an epoch counts as sound once the next step's batch shows it
        has not collapsed; a collapse (non-finite loss, or a batch far below the best epoch) rolls
        back to the last sound state with a lower learning rate.
        """
        with flushed_denormals():
            return self._run(phase, on_progress)

    def _run(self, phase: _Phase, on_progress: ProgressCallback | None) -> float:
        frames, n, world = self.frames, self.frames.shape[0], self.world
        epochs, minutes, weights = phase.epochs, phase.minutes, phase.weights
        groups = [{"params": params, "lr": lr, "peak": lr} for params, lr in phase.param_groups]
        # Fused: one pass per tensor where the default makes about ten, and Adam runs over every
        # latent of the session at every step (bikes: 0.9M values), so its cost grows with the clip.
        betas = (self.settings.adam_beta1, 0.999)
        optimizer = torch.optim.Adam(groups, betas=betas, fused=True)
        sound = pending = (self._state(), copy.deepcopy(optimizer.state_dict()))
        last_psnr, lr_scale, start, epoch = -math.inf, 1.0, time.monotonic(), 0
        # PSNR of each frame at its last visit: frames differ by many dB, so a batch is judged
        # against its own frames, never against the epoch average (which small batches straddle).
        # Not against their best: a rate steered upwards lowers PSNR on purpose, epoch by epoch,
        # while a collapse drops it between two visits.
        frame_last = np.full(n, -math.inf)
        durations: list[float] = []  # wall seconds of each finished epoch (rollbacks included)
        cap = epochs  # a time budget re-fits `epochs` below this after every epoch
        steps_per_epoch = math.ceil(n / (self.settings.batch_size * world.size))
        step_loss = _StepLoss(self)
        watch = CollapseWatch()
        forward = distributed.data_parallel(world, step_loss)
        quantized = phase.weights_quantized
        while epoch < epochs:
            if phase.settle_masks is not None and epoch >= phase.settle_masks * epochs:
                if self._fix_masks() and phase.quantize_settled and self.rate is not None:
                    self.rate.start_steps(self.model, self.masks)
                    weights, quantized = self.rate.quantized_weights(self.model, self.masks), True
                    # Earlier states have no steps: rolling back past this point would undo them.
                    sound = pending = (self._state(), copy.deepcopy(optimizer.state_dict()))
                    # Quantized weights lose dB on purpose: judge what follows against them, not
                    # against the float epochs (a rollback here quartered the rest's learning rate).
                    frame_last[:] = -math.inf
            order = torch.randperm(n, generator=self.generator).to(self.device)  # frame indices
            loss_sum, mse_sum, collapsed = 0.0, 0.0, False
            for step in range(steps_per_epoch):
                interrupt.raise_if_requested()
                idx = self._batch(order, step)
                target = unit_float(frames[idx.to(frames.device)].to(self.device))
                schedule = lr_scale * learning_rate_at(
                    (epoch + step / steps_per_epoch) / epochs, 1.0, phase.warmup
                )
                for group in optimizer.param_groups:
                    group["lr"] = group["peak"] * schedule
                lr = phase.learning_rate * schedule
                output, loss = forward(idx, target, weights, quantized)
                per_frame = ((output.detach() - target) ** 2).flatten(1).mean(1).tolist()
                mse = sum(per_frame) / len(per_frame)
                batch_psnr = np.array([psnr_from_mse(m) for m in per_frame])
                rows = idx.cpu().numpy()
                fell = np.mean(batch_psnr) < np.mean(frame_last[rows]) - COLLAPSE_DROP_DB
                collapsed = watch.collapsed(math.isfinite(loss.item()), fell)
                if distributed.any_rank(world, collapsed):  # every rank rolls back together
                    collapsed = True
                    break
                if not fell:  # a fall is judged against the frames' PSNR before it, until it ends
                    frame_last[rows] = batch_psnr
                if step == 0 and not distributed.any_rank(world, fell):
                    sound = pending  # this batch ran on the saved state: it holds
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(idx)
                mse_sum += mse * len(idx)
            if collapsed:
                if self.recoveries >= MAX_RECOVERIES:
                    break
                self.recoveries += 1
                lr_scale *= RECOVERY_LR_FACTOR
                self._load(sound[0])
                optimizer.load_state_dict(sound[1])
                pending, watch = sound, CollapseWatch()
                # Judge what follows against the restored state, not the quality it never had.
                frame_last[:] = -math.inf
                continue
            epoch += 1
            loss_sum, mse_sum = distributed.all_sum(world, [loss_sum, mse_sum])
            seen = steps_per_epoch * self.settings.batch_size * world.size if world.active else n
            psnr = last_psnr = psnr_from_mse(mse_sum / seen)
            pending = (self._state(), copy.deepcopy(optimizer.state_dict()))
            elapsed = time.monotonic() - start
            durations.append(elapsed - sum(durations))
            if quantized and self.rate is not None and self.masks is not None:
                coded = self.rate.coded_bits(self.model, self.masks, self.head)
                self.estimated_bytes = (coded + _side_bits(self.model, self.head)) / 8
                self.estimates.append(self.estimated_bytes)
                if self.settings.target_bytes is not None:
                    final = predicted_bytes(self.estimates, epochs - epoch)
                    steered = self.rate_lambda * steer_rate(final, self.settings.target_bytes)
                    start_lambda = self.settings.rate_lambda
                    self.rate_lambda = min(
                        start_lambda * STEER_RANGE, max(start_lambda / STEER_RANGE, steered)
                    )
            if minutes is not None:  # rank 0's clock decides for every rank
                epochs = fit_epochs_to_budget(epoch, cap, durations, minutes * 60 - elapsed)
                epochs = distributed.from_main(world, epochs)
            record = Progress(
                phase.name,
                epoch,
                epochs,
                loss_sum / seen,
                psnr,
                lr,
                self.recoveries,
                self.estimated_bytes,
            )
            self.history.append(record)
            if on_progress is not None:
                on_progress(record)
        final = self.evaluate(weights)
        if final < last_psnr - COLLAPSE_DROP_DB:
            self._load(sound[0])
            final = self.evaluate(weights)
        return final


# Steering lambda towards a target size. Bits fall roughly as lambda**-0.5 (quality levels, a
# factor 3 of lambda apart, differ by a factor 1.7 in size), and latents answer a new lambda over
# several epochs: each epoch moves lambda by (predicted / target)**1, half the correction that
# would meet the target at once, and never by more than a factor 1.25, so it settles without
# swinging past. The prediction matters: once the weights train quantized their steps start from
# the max rule and the estimate falls for many epochs at a constant lambda (tiny preset: 27 kB to
# 2.3 kB over 40 epochs), so steering on the estimate itself raises lambda while the fall alone
# would reach the target, and crushes quality.
STEER_GAIN = 1.0
STEER_LIMIT = 1.25
STEER_MAX_RATIO = 0.9  # the slowest decay a prediction assumes (per epoch)
# Lambda stays within this factor of where it started (quality levels 1 and 7 are 27x away): a
# target out of reach ends at the edge of the quality range, not at a crushed session.
STEER_RANGE = 100.0


def predicted_bytes(estimates: list[float], epochs_left: int) -> float:
    """The size the estimate is heading for by the end of training: its last two falls taken as
    a geometric decay, continued for the epochs left (the last estimate when it is not falling)."""
    if len(estimates) < 3:
        return estimates[-1]
    before, last = estimates[-3] - estimates[-2], estimates[-2] - estimates[-1]
    if before <= 0 or last <= 0:
        return estimates[-1]
    ratio = min(last / before, STEER_MAX_RATIO)
    return estimates[-1] - last * ratio * (1 - ratio**epochs_left) / (1 - ratio)


def steer_rate(predicted: float, target_bytes: float) -> float:
    """Factor for lambda after an epoch whose estimate is heading for `predicted` bytes."""
    factor = (max(predicted, 1.0) / target_bytes) ** STEER_GAIN
    return min(STEER_LIMIT, max(1 / STEER_LIMIT, factor))


@contextlib.contextmanager
def flushed_denormals() -> Iterator[None]:
    """Treat denormal floats as zero on the CPU while training. Trained weights, gradients and
    activations drift into the denormal range, where x86 arithmetic is many times slower: bikes
    (250 frames, cpu preset) trained 38 s per epoch without this and 17.5 s with it. Rendering
    (what decode must reproduce bit for bit) keeps the default."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def fit_epochs_to_budget(done: int, cap: int, durations: list[float], seconds_left: float) -> int:
    """Total epochs that fit the time left, judged from recent epochs (the first one pays warm-up).

    Re-estimated after every epoch, so the cosine schedule follows a machine that speeds up or slows
    down; never more than `cap`, and training ends once another epoch would overrun the budget.
    """
    recent = durations[1:][-3:] or durations
    per_epoch = max(sum(recent) / len(recent), 1e-6)
    return max(done, min(cap, done + int(max(0.0, seconds_left) / per_epoch)))


def _quantize_and_freeze(
    mw: MaskedWeight, mask: Tensor, bits: int, steps: Tensor | None
) -> TensorCodes:
    """Quantize the weights `mask` newly claims (with the learned `steps`, or the max rule),
    freeze their dequantized values, grow the union."""
    used_before = mw.used.clone()
    new = (mask & ~used_before).expand(mw.shape)
    values = mw.weight.detach()[new].cpu().numpy().astype(np.float32)
    groups = mw.groups()[new.cpu()].numpy()
    if steps is None:
        codes, scales = quantize(values, groups, mw.n_groups, bits)
    else:
        codes, scales = quantize_with_scales(values, groups, steps.cpu().numpy(), bits)
    mw.claim(mask, codes, scales)
    return TensorCodes(mask=mask.clone(), used_before=used_before, codes=codes, scales=scales)


def fit_session(
    model: PFNR,
    frames: Tensor,
    settings: TrainSettings,
    session_seed: int,
    on_progress: ProgressCallback | None = None,
    world: World = SINGLE,
    scenes: tuple[int, ...] = (0,),
) -> SessionFit:
    """Train a new session on `frames` (T, 3, H, W), uint8 or float in [0, 1] (uint8 frames take a
    quarter of the memory and are converted a batch at a time), and freeze it into `model`. Its
    latent grids lay their cells out scene by scene (`scenes`: the first frame of each).

    Under torchrun every rank calls this with the same network, frames and seed; each trains on
    its share of every batch, and the ranks check that they hold the same network before and after.
    `frames` may stay in host memory while the model runs on a GPU (batches move one at a time).
    """
    head = begin_session(model, settings, session_seed, frames, scenes)
    distributed.check_same_state(world, [model, head], "at the start of the session")
    rate = RateModel(model, settings.bits)
    trainer = _Trainer(model, head, frames, settings, rate, world)
    layers = model.masked_weights()
    latents = [grid.values for grid in head.grids().values()]
    shared = [p for mw in layers.values() for p in (mw.weight, mw.score)]
    shared += [head.conv.weight, head.conv.bias]
    groups = [
        (shared, settings.learning_rate),
        (list(rate.parameters()), settings.rate_learning_rate),
    ]
    if latents:
        groups.append((latents, settings.latent_learning_rate))
    minutes = settings.minutes
    if minutes is not None and settings.qat_epochs:
        minutes *= 0.9
    main = _Phase(
        "train",
        groups,
        settings.learning_rate,
        settings.epochs,
        minutes,
        lambda: None,
        settings.warmup,
        settle_masks=settings.mask_settle,
        quantize_settled=settings.quantize_aware,
    )
    psnr = trainer.run(main, on_progress)
    masks = {name: mw.session_mask().clone() for name, mw in layers.items()}
    if settings.qat_epochs:
        if not rate.started:
            rate.start_steps(model, masks)
        weights = [mw.weight for mw in layers.values()] + [head.conv.weight, head.conv.bias]
        tuned = [
            (weights, settings.learning_rate * 0.1),
            (list(rate.log_step), settings.rate_learning_rate * 0.1),
        ]
        if latents:
            tuned.append((latents, settings.latent_learning_rate * 0.1))
        finetune = _Phase(
            "finetune",
            tuned,
            settings.learning_rate * 0.1,
            settings.qat_epochs,
            None,
            rate.quantized_weights(model, masks),
            warmup=0.0,
            weights_quantized=True,
        )
        trainer.run(finetune, on_progress)
    learned = rate.started  # a run too short to reach its quantization phase rounds at the end
    tensors = {
        name: _quantize_and_freeze(
            mw, masks[name], settings.bits, rate.steps(name) if learned else None
        )
        for name, mw in layers.items()
    }
    with torch.no_grad():
        for mw in layers.values():
            mw.weight.zero_()
            mw.score.zero_()
        for grid in head.grids().values():
            grid.values.round_()  # what the archive stores, and what rendering reads
    distributed.check_same_state(world, [model, head], "at the end of the session")
    return SessionFit(
        tensors=tensors,
        head=head,
        psnr_float=psnr,
        epochs=sum(1 for p in trainer.history if p.phase == "train"),
        recoveries=trainer.recoveries,
        history=trainer.history,
        rate_lambda=trainer.rate_lambda,
    )


def fit_dense(
    model: PFNR,
    head: Head,
    frames: Tensor,
    settings: TrainSettings,
    on_progress: ProgressCallback | None = None,
) -> float:
    """Train every weight of `model` and `head`, no masks, no freezing: the fine-tuning baseline.

    Starts from whatever the weights hold (call `begin_session` with capacity 1 for a fresh start),
    so calling it clip after clip shows how much a plain network forgets. Returns the final PSNR.
    """
    layers = model.masked_weights()
    trainer = _Trainer(model, head, frames, settings)
    params = [mw.weight for mw in layers.values()] + [head.conv.weight, head.conv.bias]
    groups = [(params, settings.learning_rate)]
    latents = [grid.values for grid in head.grids().values()]
    if latents:
        groups.append((latents, settings.latent_learning_rate))
    phase = _Phase(
        "train",
        groups,
        settings.learning_rate,
        settings.epochs,
        settings.minutes,
        lambda: dense_weights(model),
        settings.warmup,
    )
    return trainer.run(phase, on_progress)


def dense_weights(model: PFNR) -> dict[str, Tensor]:
    """Every weight as it is, for a network trained without masks."""
    return {name: mw.weight for name, mw in model.masked_weights().items()}
