"""An archive file brought back to life: the shared network with every stored session replayed.

`load_archive` reads the container, checks the header, builds the network from the model config in the
header and replays sessions in order (each one freezes its weights exactly as it did when encoded). The
header keys live here, next to the code that writes and checks them; docs/FORMAT.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from .bitstream import unpack_session
from .config import ModelConfig
from .container import ArchiveContents, SessionChunk, read_archive
from .entropy import CODERS, EntropyCoder, get_coder
from .errors import ArchiveError, UsageError
from .growth import SharedWeights, check_grow, check_store_size
from .model import PFNR, Head
from .session_meta import SessionMeta
from .stamps import created_stamp

MOTION_VERSION = (1, 5)  # the first format version whose latent grids may follow motion
MAX_LATENT_VALUES = 1 << 28  # what one session's latent streams may hold in all (docs/FORMAT.md)


def new_header(preset: str, config: ModelConfig, coder: str) -> dict[str, Any]:
    """Header of a new archive: everything decoding needs, plus provenance."""
    return {
        "tool": "pfnr",
        "tool_version": __version__,
        "created": created_stamp(),
        "preset": preset,
        "model": config.to_dict(),
        "coder": coder,
        "working_size": [config.height, config.width],
    }


def parse_header(header: dict[str, Any], path: Path) -> tuple[ModelConfig, str]:
    """Model config and coder name from an untrusted header."""
    if header.get("tool") != "pfnr":
        raise ArchiveError(f"{path}: header does not describe a pfnr archive")
    try:
        config = ModelConfig.from_dict(header["model"])
        coder = header["coder"]
    except KeyError as exc:
        raise ArchiveError(f"{path}: header lacks the key {exc}") from None
    except ArchiveError as exc:
        raise ArchiveError(f"{path}: {exc}") from None
    if coder not in CODERS:
        raise ArchiveError(f"{path}: header names unknown entropy coder {coder!r}")
    return config, coder


def session_metas(contents: ArchiveContents, path: Path) -> list[SessionMeta]:
    """Every session's metadata, checked (it sizes decoding: frame counts, output sizes)."""
    return [
        SessionMeta.from_dict(chunk.meta, f"{path}: session {i + 1} meta")
        for i, chunk in enumerate(contents.sessions)
    ]


@dataclass
class LoadedArchive:
    """The shared weights of an archive with sessions 1..len(masks) replayed."""

    path: Path
    contents: ArchiveContents
    config: ModelConfig  # the header's (base) network
    coder: EntropyCoder
    store: SharedWeights
    metas: list[SessionMeta]  # every session's, checked
    grows: list[tuple[int, ...]] = field(default_factory=list)  # per replayed session
    masks: list[dict[str, Tensor]] = field(default_factory=list)
    heads: list[Head] = field(default_factory=list)

    @property
    def header(self) -> dict[str, Any]:
        return self.contents.header

    @property
    def session_count(self) -> int:
        return len(self.contents.sessions)

    def session(self, number: int) -> SessionChunk:
        """Session by its 1-based number, as users count them."""
        if not 1 <= number <= self.session_count:
            raise UsageError(
                f"{self.path} has no session {number}; it holds sessions 1..{self.session_count}"
                if self.session_count
                else f"{self.path} holds no sessions yet"
            )
        return self.contents.sessions[number - 1]

    def session_model(self, number: int) -> PFNR:
        """Session `number`'s own network (1-based; a replayed one), as it was encoded."""
        return self.store.view(number, self.grows[number - 1])


def grow_of(config: ModelConfig, meta: SessionMeta, path: Path, number: int) -> tuple[int, ...]:
    """A session's `grow` metadata, checked against the header's network."""
    grow = None if meta.grow is None else list(meta.grow)
    return check_grow(config, grow, f"{path}: session {number}")


def load_archive(path: Path, device: torch.device, upto: int | None = None) -> LoadedArchive:
    """Read `path` and replay its sessions 1..upto (all by default)."""
    contents = read_archive(path)  # which bounds the session count (container.MAX_SESSIONS)
    config, coder_name = parse_header(contents.header, path)
    if config.follow_motion and contents.version < MOTION_VERSION:
        raise ArchiveError(
            f"{path}: header asks for follow_motion, which format {contents.version[0]}."
            f"{contents.version[1]} does not define"
        )
    metas = session_metas(contents, path)
    count = len(contents.sessions) if upto is None else min(upto, len(contents.sessions))
    chunks = contents.sessions[:count]
    frames = [meta.frames for meta in metas[:count]]
    scenes = [meta.scenes_in(contents.version) for meta in metas[:count]]
    for i, (n, cuts) in enumerate(zip(frames, scenes, strict=True)):
        if config.latent_values(n, cuts) > MAX_LATENT_VALUES:
            raise ArchiveError(
                f"{path}: session {i + 1} would hold {config.latent_values(n, cuts)} latent "
                f"values (limit {MAX_LATENT_VALUES})"
            )
    grows = [grow_of(config, meta, path, i + 1) for i, meta in enumerate(metas[:count])]
    check_store_size(config, grows, str(path))
    store = SharedWeights(config, device)
    loaded = LoadedArchive(path, contents, config, get_coder(coder_name), store, metas, grows)
    for i, grow in enumerate(grows):
        view = store.view(i + 1, grow)
        try:
            masks, head = unpack_session(
                chunks[i].streams, view, loaded.coder, frames[i], contents.version, scenes[i]
            )
        except ArchiveError as exc:
            raise ArchiveError(f"{path}: session {i + 1}: {exc}") from None
        store.absorb(i + 1, view)
        loaded.masks.append(masks)
        loaded.heads.append(head)
    return loaded
