"""Symmetric per-group weight quantization (numpy only, model-agnostic).

The model layer hands over a flat float32 array and, for each value, the id of its group
(usually the output channel). Each group gets one float32 scale; values become small signed
integer codes. Decoding is a single float32 multiply so that every machine rebuilds
bit-identical weights from the stored codes and scales.
"""

from __future__ import annotations

import numpy as np

from .errors import ArchiveError, ConfigError

MIN_BITS = 2
MAX_BITS = 8


def max_code(bits: int) -> int:
    """Largest code magnitude for `bits`-bit symmetric quantization (codes lie in [-m, m])."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer):
        raise ConfigError(
            f"quantization bits must be an integer {MIN_BITS}..{MAX_BITS}, got {bits!r}"
        )
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"quantization bits must be in {MIN_BITS}..{MAX_BITS}, got {bits}")
    return 2 ** (int(bits) - 1) - 1


def _check_groups(groups: np.ndarray, n_values: int, n_groups: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.shape[0] != n_values:
        raise ConfigError(f"groups must be 1-D with {n_values} entries, got shape {groups.shape}")
    if groups.size and not np.issubdtype(groups.dtype, np.integer):
        raise ConfigError(f"groups must be integers, got dtype {groups.dtype}")
    groups = groups.astype(np.int64, copy=False)
    if groups.size and (groups.min() < 0 or groups.max() >= n_groups):
        raise ConfigError(
            f"group ids must lie in [0, {n_groups}), found [{groups.min()}, {groups.max()}]"
        )
    return groups


def quantize(
    values: np.ndarray, groups: np.ndarray, n_groups: int, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize `values` symmetrically with one scale per group.

    scale_g = max|v in g| / (2**(bits-1) - 1) in float32 (0.0 for empty or all-zero groups) and
    codes = round(v / scale_g) clipped to +-(2**(bits-1) - 1), as int32 (0 where the scale is 0).
    Returns (codes int32 (n,), scales float32 (n_groups,)). Every value then lies within scale/2 of
    its reconstruction, because the group maximum maps exactly onto the largest code.
    """
    qmax = max_code(bits)
    values = np.asarray(values)
    if values.ndim != 1:
        raise ConfigError(f"values must be 1-D, got shape {values.shape}")
    if values.dtype != np.float32:
        raise ConfigError(f"values must be float32, got dtype {values.dtype}")
    if not np.all(np.isfinite(values)):
        raise ConfigError("values to quantize contain NaN or infinity")
    if isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer) or n_groups < 1:
        raise ConfigError(f"n_groups must be a positive integer, got {n_groups!r}")
    groups = _check_groups(groups, values.shape[0], int(n_groups))

    max_abs = np.zeros(int(n_groups), dtype=np.float32)
    np.maximum.at(max_abs, groups, np.abs(values))
    scales = (max_abs / np.float32(qmax)).astype(np.float32)

    per_value = scales[groups].astype(np.float64)
    safe = np.where(per_value > 0, per_value, 1.0)
    codes = np.rint(values.astype(np.float64) / safe)
    codes = np.clip(codes, -qmax, qmax)
    codes[per_value == 0] = 0
    return codes.astype(np.int32), scales


def quantize_with_scales(
    values: np.ndarray, groups: np.ndarray, scales: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize `values` with given per-group scales (steps learned in training): codes =
    round(v / scale) clipped to +-(2**(bits-1) - 1). Returns (codes int32, scales float32)."""
    qmax = max_code(bits)
    scales = np.asarray(scales, dtype=np.float32)
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype != np.float32 or not np.all(np.isfinite(values)):
        raise ConfigError("values to quantize must be a finite 1-D float32 array")
    if scales.ndim != 1 or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ConfigError("scales must be a 1-D array of positive finite numbers")
    groups = _check_groups(groups, values.shape[0], scales.shape[0])
    codes = np.rint(values.astype(np.float64) / scales[groups].astype(np.float64))
    return np.clip(codes, -qmax, qmax).astype(np.int32), scales


def dequantize(codes: np.ndarray, groups: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Rebuild float32 values as codes.astype(float32) * scales[groups].

    One correctly rounded float32 multiply per value, nothing else, so the result is bit-identical
    on every IEEE-754 machine: frozen weights of old sessions never drift.
    """
    codes = np.asarray(codes)
    scales = np.asarray(scales)
    groups = np.asarray(groups)
    if codes.ndim != 1 or groups.shape != codes.shape:
        raise ArchiveError(
            f"codes and groups must be 1-D of equal length, got {codes.shape} and {groups.shape}"
        )
    if scales.ndim != 1 or scales.dtype != np.float32:
        raise ArchiveError(f"scales must be a 1-D float32 array, got {scales.dtype} {scales.shape}")
    if groups.size and (groups.min() < 0 or groups.max() >= scales.shape[0]):
        raise ArchiveError(
            f"group ids must lie in [0, {scales.shape[0]}) to match the stored scales, "
            f"found [{groups.min()}, {groups.max()}]"
        )
    return codes.astype(np.float32) * scales[groups]
