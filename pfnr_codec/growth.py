"""Room for every session: the shared network grows by channels that only the growing session uses.

A session's own network is the header's base network, widened by the channels it adds to every
layer (`grow`, in its metadata; zero for sessions that fit in the base network). In every tensor of
a session's network the base part comes first: the first base channels of each layer (for a
convolution feeding a PixelShuffle(r), the first r^2 rows per base channel; the fine latent channels,
which never grow, come before a block's other inputs). So the base part of any session's tensor is
a leading slice, the same positions in every session.

`SharedWeights` keeps the base network's frozen values and union (shared by all sessions: a session
may reuse them, and claim what is still free there), and, for each session that grew, the rest of
its own tensors (which no other session ever reads). A session's view is its own tensors with the
current base part written over their leading slice. Positions a later session claims in the base
part were free when an earlier session was encoded, so they lie outside its mask and its decoded
frames never change; the compute and the memory of a session do not grow with the number of
sessions before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .config import MAX_WEIGHTS, ModelConfig
from .errors import ArchiveError
from .model import PFNR

MAX_GROW = 4096  # channels one session may add to one layer (docs/FORMAT.md, session keys)


def layer_widths(config: ModelConfig) -> tuple[int, ...]:
    """Output channels of every growable layer: the stem's, then each block's."""
    return (config.base_channels, *config.channels)


def grown_config(config: ModelConfig, grow: tuple[int, ...]) -> ModelConfig:
    """The network of a session that added `grow` channels to each layer of `config`."""
    if not any(grow):
        return config
    widths = [w + g for w, g in zip(layer_widths(config), grow, strict=True)]
    return replace(config, base_channels=widths[0], channels=tuple(widths[1:]))


def growth_for(config: ModelConfig, share: float) -> tuple[int, ...]:
    """Channels a growing session adds to each layer: `share` of the base widths, at least one."""
    return tuple(max(1, math.ceil(share * w)) for w in layer_widths(config))


def check_grow(config: ModelConfig, value: object, where: str) -> tuple[int, ...]:
    """A session's `grow` metadata, type- and bound-checked (untrusted input)."""
    layers = len(layer_widths(config))
    if value is None:
        return (0,) * layers
    if (
        not isinstance(value, list)
        or len(value) != layers
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not all(0 <= v <= MAX_GROW for v in value)
    ):
        raise ArchiveError(f"{where}: grow must be a list of {layers} integers in 0..{MAX_GROW}")
    if any(value) and not config.latent:
        raise ArchiveError(f"{where}: grow is set, but only the latent model family grows")
    return tuple(value)


def stored_weights(config: ModelConfig, grows: list[tuple[int, ...]]) -> int:
    """Values the store holds for these sessions: the base network plus each grown network."""
    return config.weight_count + sum(grown_config(config, g).weight_count for g in grows if any(g))


def _base_slice(base_shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The leading slice of a session's tensor that holds the base tensor's positions."""
    return tuple(slice(0, n) for n in base_shape)


@dataclass
class _Own:
    """A grown session's own tensors (base part included, but the store's base part rules)."""

    frozen: dict[str, torch.Tensor]
    used: dict[str, torch.Tensor]


class SharedWeights:
    """The base network's frozen values and union, plus every grown session's own tensors."""

    def __init__(self, config: ModelConfig, device: torch.device) -> None:
        self.config = config
        self.base = PFNR(config).to(device)
        self.device = device
        self.own: dict[int, _Own] = {}  # by session number

    def view(self, session: int, grow: tuple[int, ...]) -> PFNR:
        """Session `session`'s own network with everything frozen so far (its own tensors if it
        was replayed or trained already, the current base part in any case)."""
        config = grown_config(self.config, grow)
        view = PFNR(config).to(self.device)
        own = self.own.get(session)
        base_layers = self.base.masked_weights()
        with torch.no_grad():
            for name, mw in view.masked_weights().items():
                base = base_layers[name]
                if own is not None:
                    mw.frozen.copy_(own.frozen[name])
                    mw.used.copy_(own.used[name])
                mw.frozen[_base_slice(base.shape)] = base.frozen
                mw.used[_base_slice(base.mask_shape)] = base.used
        return view

    def absorb(self, session: int, view: PFNR) -> None:
        """Keep what a session froze: its base part in the base network, the rest as its own."""
        grown = view.config != self.config
        base_layers = self.base.masked_weights()
        own = _Own({}, {})
        with torch.no_grad():
            for name, mw in view.masked_weights().items():
                base = base_layers[name]
                base.frozen.copy_(mw.frozen[_base_slice(base.shape)])
                base.used.copy_(mw.used[_base_slice(base.mask_shape)])
                if grown:
                    own.frozen[name] = mw.frozen.clone()
                    own.used[name] = mw.used.clone()
        if grown:
            self.own[session] = own

    def stored_weights(self) -> int:
        """Shared values held: the base network's and every grown session's own tensors."""
        count = sum(mw.frozen.numel() for mw in self.base.masked_weights().values())
        return count + sum(t.numel() for own in self.own.values() for t in own.frozen.values())

    def free_share(self) -> dict[str, float]:
        """Share of each base tensor's positions no session uses (grown sessions use all of
        their own channels)."""
        return {
            n: 1.0 - float(mw.used.float().mean()) for n, mw in self.base.masked_weights().items()
        }


def check_store_size(config: ModelConfig, grows: list[tuple[int, ...]], where: str) -> None:
    """Refuse sessions whose networks would not fit the bound on shared weights, before building."""
    if stored_weights(config, grows) > MAX_WEIGHTS:
        raise ArchiveError(f"{where}: the sessions' networks exceed {MAX_WEIGHTS} shared weights")
