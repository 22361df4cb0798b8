"""Per-group symmetric quantization: error bound, exact dequantization, argument checks."""

import numpy as np
import pytest

from pfnr_codec.errors import ArchiveError, ConfigError
from pfnr_codec.quant import dequantize, max_code, quantize


def _values(seed: int, n: int = 3001, n_groups: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n)
    groups[groups == 5] = 4  # group 5 stays empty
    spread = np.exp(rng.normal(0, 2, n_groups)).astype(np.float32)  # very different group ranges
    values = (rng.standard_normal(n).astype(np.float32) * spread[groups]).astype(np.float32)
    values[groups == 6] = 0.0  # group 6 is all zeros
    return values, groups


@pytest.mark.parametrize("bits", range(2, 9))
def test_error_within_half_a_step(bits: int) -> None:
    values, groups = _values(bits)
    codes, scales = quantize(values, groups, 7, bits)
    qmax = 2 ** (bits - 1) - 1
    assert codes.dtype == np.int32 and scales.dtype == np.float32 and scales.shape == (7,)
    assert np.abs(codes).max() <= qmax
    recon = dequantize(codes, groups, scales)
    err = np.abs(values.astype(np.float64) - recon.astype(np.float64))
    bound = scales[groups].astype(np.float64) / 2
    assert np.all(err <= bound * (1 + 1e-5) + 1e-30)
    for g in range(5):
        in_g = groups == g
        peak = np.abs(values[in_g]).max()
        assert scales[g] == np.float32(peak) / np.float32(qmax)
        assert np.abs(codes[in_g]).max() == qmax  # the group's largest value uses the top code
    assert scales[5] == 0 and scales[6] == 0
    assert np.all(codes[groups == 6] == 0)


def test_dequantize_is_one_rounded_float32_multiply() -> None:
    values, groups = _values(11)
    codes, scales = quantize(values, groups, 7, 6)
    out = dequantize(codes, groups, scales)
    # float32 x float32 is exact in float64, so rounding it once gives the IEEE float32 product
    exact = (codes.astype(np.float64) * scales.astype(np.float64)[groups]).astype(np.float32)
    assert out.dtype == np.float32
    assert np.array_equal(out.view(np.uint32), exact.view(np.uint32))
    again = dequantize(codes.copy(), groups.astype(np.int32), scales.copy())
    assert np.array_equal(out.view(np.uint32), again.view(np.uint32))


@pytest.mark.parametrize("bits", [1, 9, 0, -3, True, 4.0])
def test_bits_outside_2_to_8_rejected(bits) -> None:
    values, groups = _values(0, n=20)
    with pytest.raises(ConfigError, match="bits"):
        quantize(values, groups, 7, bits)
    with pytest.raises(ConfigError):
        max_code(bits)


def test_bad_arguments_rejected() -> None:
    values, groups = _values(0, n=50)
    with pytest.raises(ConfigError):
        quantize(values, groups, 3, 8)  # group ids up to 6
    with pytest.raises(ConfigError):
        quantize(values.astype(np.float64), groups, 7, 8)
    with pytest.raises(ConfigError):
        quantize(values, groups[:-1], 7, 8)
    bad = values.copy()
    bad[3] = np.nan
    with pytest.raises(ConfigError):
        quantize(bad, groups, 7, 8)
    codes, scales = quantize(values, groups, 7, 8)
    with pytest.raises(ArchiveError):
        dequantize(codes, groups, scales[:3])  # fewer scales than groups


def test_empty_input() -> None:
    codes, scales = quantize(np.zeros(0, np.float32), np.zeros(0, np.int64), 4, 8)
    assert codes.shape == (0,) and np.array_equal(scales, np.zeros(4, np.float32))
    assert dequantize(codes, np.zeros(0, np.int64), scales).shape == (0,)
