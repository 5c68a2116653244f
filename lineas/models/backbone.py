"""Backbones: a frozen model plus the three things the fitting loop asks of it.

The loop never asks "text or image?". It asks a backbone to ``collate`` prompts into a batch,
to run ``forward(batch)`` (hooks attached by the caller end it after the last site), and for
``position_mask(batch)``: which positions of a site output are real samples (None: all of them).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from lineas.core.errors import ConfigError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class Backbone(Protocol):
    model: nn.Module
    spec: str

    def collate(self, prompts: list[str]) -> dict[str, Any]: ...

    def forward(self, batch: dict[str, Any]) -> Any: ...

    def position_mask(self, batch: dict[str, Any]) -> torch.Tensor | None: ...


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``torch.float32`` from ``"float32"`` / ``"fp32"`` (bfloat16, float16 likewise), or a dtype as is."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"dtype {name!r}: choose float32, bfloat16 or float16") from None
