"""Backbone dtypes: names, and ``auto`` (bfloat16 where the hardware computes it, else float32)."""

from __future__ import annotations

import pytest
import torch

from lineas.core.errors import ConfigError
from lineas.models.backbone import native_bf16, parse_dtype


@pytest.mark.parametrize(
    ("name", "dtype"), [("float32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_named_dtypes(name, dtype):
    assert parse_dtype(name) is dtype
    assert parse_dtype(dtype) is dtype


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(True, False, True), (False, True, True), (False, False, False)]
)
def test_auto_follows_the_cpu_features(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_bf16("cpu") is expected
    assert parse_dtype("auto", "cpu") is (torch.bfloat16 if expected else torch.float32)


def test_auto_without_the_probes_is_float32(monkeypatch):
    """A torch that lacks the private feature checks: no guess, float32."""
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert parse_dtype("auto", "cpu") is torch.float32


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ConfigError, match="choose auto, float32, bfloat16 or float16"):
        parse_dtype("float8")
