"""The float type of training's forward passes.

Training may run the network's convolutions in bfloat16 where the hardware computes it natively
(CUDA GPUs that support it, CPUs with AVX512-BF16 or AMX). On a 2-core AMD EPYC with AVX512-BF16,
bikes' epochs take about a quarter less time (8.5 s against 11 s) and reach the same PSNR at equal
epochs (26.62 dB against 26.44 dB after 4). The rate term, the quantization steps, the Fourier
block (the FFTs have no bfloat16 kernels), the session head and the loss stay float32, and so do
every evaluation and all rendering and decoding, which never autocast: what an archive holds
decodes the same whatever precision trained it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def training_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype `precision` (one of config.PRECISIONS) trains in on `device`; None: float32.

    "auto" takes bfloat16 only where the hardware does it natively: emulated bfloat16 on an older
    CPU is slower than float32.
    """
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else None
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


@cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bfloat16 arithmetic (Linux: /proc/cpuinfo's flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_CPU_BF16_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


@contextlib.contextmanager
def autocast(dtype: torch.dtype | None, device: torch.device) -> Iterator[None]:
    """Run the block's matrix products in `dtype` (nothing changes when it is None)."""
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield
