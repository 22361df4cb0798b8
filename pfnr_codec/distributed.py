"""One session trained by several processes: torchrun's environment, torch.distributed collectives.

Under `torchrun --nproc-per-node N pfnr encode ...` every process (rank) builds the same network
from the same archive and seed, trains on its share of each batch, and DistributedDataParallel
averages the gradients (NCCL on CUDA, gloo on the CPU), so every rank holds the same weights after
every step. What must agree beyond the gradients (a rollback after a collapse, the number of epochs
a time budget allows, the epoch's PSNR) goes through the few collectives here. Only rank 0 takes
the archive's lock, writes, and talks to the user. Without torchrun nothing here does anything.
"""

from __future__ import annotations

import gc
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from . import errors
from .errors import DistributedError, PfnrError

# A rank that waits longer than this for the others gives up (a stuck or killed peer).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one session."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this host

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    if not value.isdigit():
        raise DistributedError(f"${name} must be a non-negative integer, got {value!r}")
    return int(value)


def world_from_env() -> World:
    """The world torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK); a single
    process when it describes none."""
    size = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_size = _env_int("LOCAL_WORLD_SIZE", local + 1)
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(f"torchrun gave rank {rank} of a world of {size} processes")
    if not 0 <= local < local_size <= size or local > rank:
        raise DistributedError(f"torchrun gave local rank {local} of {local_size} on a host")
    return World(rank, size, local, local_size)


def join(world: World, device: torch.device) -> None:
    """Join the process group (once): NCCL when the ranks train on CUDA, gloo otherwise."""
    if not world.active or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)


def leave() -> None:
    """Leave the process group together, with nothing left holding it. A rank that tears gloo
    down while a peer is still sending, or whose DistributedDataParallel wrappers (reference
    cycles) survive until the interpreter shuts down, dies of SIGABRT ("terminate called without
    an active exception") after its work is done, and torchrun then fails the whole run."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        _collective(dist.barrier)
        dist.destroy_process_group()


def rank_device(world: World, device: torch.device) -> torch.device:
    """Each rank of a CUDA run takes the GPU of its local rank (unless one was named)."""
    if world.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def data_parallel(world: World, module: nn.Module) -> nn.Module:
    """`module` whose gradients DistributedDataParallel averages over the ranks (itself when
    alone). Parameters a step leaves unused (scores once masks are fixed, steps before the weights
    are quantized) are allowed; buffers are identical on every rank, so they are not re-sent."""
    if not world.active:
        return module
    device = next(module.buffers()).device
    return nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
        forward_sync_buffers=False,
    )


def _collective(run):  # noqa: ANN001, ANN202
    try:
        return run()
    except PfnrError:
        raise
    except (RuntimeError, OSError) as exc:  # a peer died, hung up or timed out
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(f"lost contact with the other training processes: {first}") from None


def all_sum(world: World, values: list[float]) -> list[float]:
    """Element-wise sum over the ranks (float64, the same order on every rank)."""
    if not world.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    _collective(lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
    return tensor.cpu().tolist()


def any_rank(world: World, flag: bool) -> bool:
    """True on every rank when it is true on one."""
    if not world.active:
        return flag
    return all_sum(world, [1.0 if flag else 0.0])[0] > 0


def from_main(world: World, value: int) -> int:
    """Rank 0's `value`, on every rank."""
    if not world.active:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    _collective(lambda: dist.broadcast(tensor, src=0))
    return int(tensor.item())


def _collective_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def state_digest(modules: list[nn.Module]) -> str:
    """sha256 of every parameter and buffer of `modules`, in registration order."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_same_state(world: World, modules: list[nn.Module], when: str) -> None:
    """Every rank holds the same network: the digest of rank 0 against everyone's."""
    if not world.active:
        return
    mine = state_digest(modules)
    digests: list[str | None] = [None] * world.size
    _collective(lambda: dist.all_gather_object(digests, mine))
    if len(set(digests)) != 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise DistributedError(
            f"ranks {differ} hold a different network than rank 0 {when}; all ranks must read "
            "the same archive and video with the same settings"
        )


def _shared_dir() -> Path:
    """Where a host's processes share files in memory: /dev/shm where there is one."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def read_once_per_host(
    world: World, read: Callable[[], tuple[np.ndarray, Any]]
) -> tuple[np.ndarray, Any]:
    """`read()` (an array and any picklable description of it) on every rank, run by one process
    per host: the first process of each host reads and shares the array through a file in shared
    memory that the host's other processes map copy-on-write (one copy of the frames per host, and
    one decode). Where that file cannot be written (a small /dev/shm), every process reads for
    itself. A pfnr error of a reader is raised on every rank, as it was raised."""
    if not world.active or world.local_size == 1:
        return read()
    reader = world.local_rank == 0
    status: tuple | None = None
    if reader:
        try:
            array, info = read()
        except PfnrError as exc:
            status = ("error", type(exc).__name__, str(exc))
        else:
            status = ("ok", info, _write_shared(array))
    statuses: list[tuple | None] = [None] * world.size
    _collective(lambda: dist.all_gather_object(statuses, status))
    for other in statuses:
        if other is not None and other[0] == "error":
            _, name, message = other
            error = getattr(errors, name, None)
            if not (isinstance(error, type) and issubclass(error, PfnrError)):
                error = PfnrError
            raise error(message)
    mine = statuses[world.rank - world.local_rank]  # ranks of a host are consecutive
    assert mine is not None
    _, info, shared = mine
    if not reader:
        array = read()[0] if shared is None else np.load(shared, mmap_mode="c")
    all_sum(world, [0.0])  # every process holds its mapping: the name can go
    if reader and shared is not None:
        Path(shared).unlink(missing_ok=True)
    return array, info


def _write_shared(array: np.ndarray) -> str | None:
    """`array` as a .npy file in shared memory; None when it does not fit there."""
    path = _shared_dir() / f"pfnr-frames-{os.getpid()}-{uuid.uuid4().hex}.npy"
    try:
        with path.open("wb") as f:
            np.save(f, np.ascontiguousarray(array))
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return str(path)
