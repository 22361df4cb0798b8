"""precision.py: which float type training autocasts to, and what stays float32 under it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pfnr_codec import precision
from pfnr_codec.api import EncodeOptions, decode_session, encode_video
from pfnr_codec.errors import ConfigError
from pfnr_codec.model.fourier import FourierSubneuralOperator
from pfnr_codec.train import TrainSettings

CPU = torch.device("cpu")


def test_explicit_choices_and_auto_follows_the_cpu(monkeypatch):
    assert precision.training_dtype("float32", CPU) is None
    assert precision.training_dtype("bfloat16", CPU) is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.training_dtype("auto", CPU) is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.training_dtype("auto", CPU) is None


def test_an_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision"):
        TrainSettings(precision="float16")


def test_the_fourier_block_computes_in_float32_under_autocast():
    fso = FourierSubneuralOperator(6, 4, (6, 10), 2, (2, 3))
    for weight in (fso.real, fso.imag):
        weight.reset_session(torch.Generator().manual_seed(1))
    x = torch.randn(2, 6, 6, 10, generator=torch.Generator().manual_seed(2))
    plain = fso(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = fso(x)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain)


def test_a_session_trained_in_bfloat16_decodes_as_encoded(clips, tmp_path):
    psnrs = {}
    for name in ("float32", "bfloat16"):
        archive = tmp_path / f"{name}.pfnr"
        options = EncodeOptions(preset="tiny", epochs=12, device="cpu", precision=name)
        psnrs[name] = encode_video(archive, clips[0], options).psnr
        result = decode_session(archive, 1, size="working")
        assert result.matches_encode is True
        assert np.isfinite(psnrs[name])
    # Same seed and epochs: bfloat16 products train about as well (tiny preset: within 1 dB).
    assert abs(psnrs["bfloat16"] - psnrs["float32"]) < 1.0
