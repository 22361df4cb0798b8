"""A session's share of the network as named byte streams, and back.

Per shared tensor a session stores four streams:
- `<tensor>/reuse`: its mask over the positions earlier sessions already use (bits);
- `<tensor>/claim`: its mask over the free positions (bits);
- `<tensor>/codes`: the quantized values of the weights it newly claims, row-major (ints);
- `<tensor>/scales`: one float32 scale per quantization group;
plus `head/weight` and `head/bias` (float32) and, in the latent family, `latent/<grid>/<channel>`: the
integer latents of one channel of one grid, row-major over (cells, height, width): an ints stream in
files of format 1.1, a latents stream (context-coded along the cells) from 1.2 on (or, from 1.4, by
its neighbours in the cell); and, when the model's grids follow the camera (1.5), `motion/y` and
`motion/x`: each frame's position step (ints). Every count is implied by what the decoder already
holds (the model, the union of earlier masks, this session's mask and frame count), so no stream
stores its own length of symbols.
Unpacking replays the session into the model: the same dequantized values are frozen at the same
positions as when it was encoded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import arm
from .entropy import (
    EntropyCoder,
    decode_bits,
    decode_floats,
    decode_ints,
    decode_latents,
    encode_bits,
    encode_floats,
    encode_ints,
    encode_latents,
)
from .errors import ArchiveError, PfnrError
from .model import PFNR, Head
from .motion import position_steps, positions_from_steps
from .train import SessionFit

STREAM_KINDS = ("reuse", "claim", "codes", "scales")
MOTION_STREAMS = ("motion/y", "motion/x")  # (1.5) each frame's position step, when grids follow
LATENTS_STREAM_VERSION = (1, 2)  # the first format version whose latents are latents streams
SPATIAL_LATENTS_VERSION = (1, 4)  # the first whose latents streams may use the spatial context
ARM_LATENTS_VERSION = (1, 6)  # the first whose grids may carry a context model (mode-3 channels)


def stream_category(name: str) -> str:
    """Which part of the byte breakdown a stream belongs to."""
    kind = name.rsplit("/", 1)[-1]
    if name.startswith("head/"):
        return "heads"
    if name.startswith(("latent/", "motion/")):  # a session's own input
        return "latents"
    return {"reuse": "masks", "claim": "masks", "codes": "weights", "scales": "scales"}.get(
        kind, "other"
    )


def pack_session(
    fit: SessionFit, coder: EntropyCoder, version: tuple[int, int]
) -> dict[str, bytes]:
    """Streams for a freshly fitted session, as a file of format `version` holds them."""
    streams: dict[str, bytes] = {}
    for name, t in fit.tensors.items():
        mask, used = t.mask.cpu().numpy(), t.used_before.cpu().numpy()
        streams[f"{name}/reuse"] = encode_bits(mask[used], coder)
        streams[f"{name}/claim"] = encode_bits(mask[~used], coder)
        streams[f"{name}/codes"] = encode_ints(t.codes, coder)
        streams[f"{name}/scales"] = encode_floats(t.scales)
    head = fit.head.conv
    streams["head/weight"] = encode_floats(head.weight.detach().cpu().numpy().ravel())
    streams["head/bias"] = encode_floats(head.bias.detach().cpu().numpy().ravel())
    if fit.head.positions is not None:
        steps = position_steps(fit.head.positions.numpy())
        for axis, name in enumerate(MOTION_STREAMS):
            streams[name] = encode_ints(steps[:, axis], coder)
    for name, grid in fit.head.grids().items():
        values = grid.values.detach().cpu().numpy()  # (cells, C, h, w), integers
        codes = values.astype(np.int64)
        if not np.array_equal(codes, values):
            raise ArchiveError(f"{name}: latents must be integers before they are stored")
        streams.update(pack_grid(name, codes, coder, version))
    return streams


def pack_grid(
    name: str, codes: np.ndarray, coder: EntropyCoder, version: tuple[int, int]
) -> dict[str, bytes]:
    """Streams of one latent grid (cells, C, h, w): a stream per channel and, from format 1.6
    where it codes shorter in all, the grid's context model and mode-3 channels that use it."""
    cells, channels, _, width = codes.shape
    streams: dict[str, bytes] = {}
    for c in range(channels):
        channel = codes[:, c].reshape(cells, -1)  # (cells, h * w)
        if version >= LATENTS_STREAM_VERSION:
            spatial_width = width if version >= SPATIAL_LATENTS_VERSION else None
            streams[f"{name}/{c}"] = encode_latents(channel, coder, spatial_width)
        else:
            streams[f"{name}/{c}"] = encode_ints(channel.ravel(), coder)
    if version < ARM_LATENTS_VERSION or coder.name != arm.ARM_CODER:
        return streams
    if sum(map(len, streams.values())) < arm.MIN_GRID_BYTES:
        return streams
    model = arm.fit(codes)
    if model is None:
        return streams
    with_model = dict(streams)
    with_model[f"{name}/arm"] = model.to_bytes(coder)
    for c in range(channels):
        candidate = bytes([arm.LATENT_ARM_MODE]) + arm.encode_channel(model, codes, c)
        if len(candidate) < len(streams[f"{name}/{c}"]):
            with_model[f"{name}/{c}"] = candidate
    return min(streams, with_model, key=lambda s: sum(map(len, s.values())))


def _stream(streams: dict[str, bytes], name: str) -> bytes:
    try:
        return streams[name]
    except KeyError:
        raise ArchiveError(f"session is missing its stream {name!r}") from None


def _decode_channel(
    data: bytes, cells: int, shape: tuple[int, int], coder: EntropyCoder, version: tuple[int, int]
) -> np.ndarray:
    height, width = shape
    if version >= LATENTS_STREAM_VERSION:
        spatial_width = width if version >= SPATIAL_LATENTS_VERSION else None
        return decode_latents(data, cells, height * width, coder, spatial_width)
    return decode_ints(data, cells * height * width, coder)


def unpack_grid(
    streams: dict[str, bytes],
    name: str,
    shape: tuple[int, int, int, int],
    coder: EntropyCoder,
    version: tuple[int, int],
) -> np.ndarray:
    """The integers (cells, C, h, w) of grid `name`, channel by channel: a mode-3 channel
    (format 1.6) reads the channels before it through the grid's context model."""
    cells, channels, height, width = shape
    padded = arm.padded_grid(cells, channels, height, width)
    model = None
    for c in range(channels):
        data = _stream(streams, f"{name}/{c}")
        if version >= ARM_LATENTS_VERSION and data[:1] == bytes([arm.LATENT_ARM_MODE]):
            if model is None:
                model = arm.ContextModel.from_bytes(
                    _stream(streams, f"{name}/arm"), channels, coder
                )
            arm.decode_channel(model, data[1:], padded, c)
        else:
            values = _decode_channel(data, cells, (height, width), coder, version)
            arm.place_channel(padded, c, values.reshape(cells, height, width))
    return arm.unpad(padded)


def unpack_session(
    streams: dict[str, bytes],
    model: PFNR,
    coder: EntropyCoder,
    frames: int,
    version: tuple[int, int],
    scenes: tuple[int, ...] = (0,),
) -> tuple[dict[str, Tensor], Head]:
    """Replay a stored session of `frames` frames in `scenes` from a file of format `version` into
    `model` (freezing its weights); returns its masks and head."""
    masks: dict[str, Tensor] = {}
    try:
        for name, mw in model.masked_weights().items():
            used = mw.used.cpu().numpy()
            mask = np.zeros(mw.mask_shape, dtype=bool)
            mask[used] = decode_bits(_stream(streams, f"{name}/reuse"), int(used.sum()), coder)
            mask[~used] = decode_bits(_stream(streams, f"{name}/claim"), int((~used).sum()), coder)
            new = np.broadcast_to(mask & ~used, mw.shape)
            codes = decode_ints(_stream(streams, f"{name}/codes"), int(new.sum()), coder)
            scales = decode_floats(_stream(streams, f"{name}/scales"), mw.n_groups)
            mask_t = torch.from_numpy(mask).to(mw.used.device)
            mw.claim(mask_t, codes, scales)
            masks[name] = mask_t
        head = model.new_head(frames, scenes)
        conv = head.conv
        weight = decode_floats(_stream(streams, "head/weight"), conv.weight.numel())
        bias = decode_floats(_stream(streams, "head/bias"), conv.bias.numel())
        positions = None
        if model.config.follow_motion:
            steps = [decode_ints(_stream(streams, name), frames, coder) for name in MOTION_STREAMS]
            positions = positions_from_steps(np.stack(steps, axis=1))
        latents = {}
        for name, grid in head.grids().items():
            values = unpack_grid(streams, name, tuple(grid.values.shape), coder, version)
            latents[name] = torch.from_numpy(values.astype(np.float32))
    except PfnrError:
        raise
    except (ValueError, IndexError) as exc:
        raise ArchiveError(f"session streams do not fit the archive's model: {exc}") from None
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight.copy()).view(conv.weight.shape))
        conv.bias.copy_(torch.from_numpy(bias.copy()))
        for name, grid in head.grids().items():
            grid.values.copy_(latents[name])
    if positions is not None:
        head.follow(torch.from_numpy(positions))
    return masks, head.to(next(model.buffers()).device)
