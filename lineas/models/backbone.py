"""Backbones: a frozen model plus the three things the fitting loop asks of it.

The loop never asks "text or image?". It asks a backbone to ``collate`` prompts into a batch,
to run ``forward(batch)`` (hooks attached by the caller end it after the last site), and for
``position_mask(batch)``: which positions of a site output are real samples (None: all of them).
``fit_steps`` says how many times each site fires in one ``forward``: 1 for a language model, the
number of denoising steps fitted for a diffusion sampler (then the forward runs to its end).
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
    fit_steps: int

    def collate(self, prompts: list[str]) -> dict[str, Any]: ...

    def forward(self, batch: dict[str, Any]) -> Any: ...

    def position_mask(self, batch: dict[str, Any]) -> torch.Tensor | None: ...


def native_bf16(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` (default: cuda if available, else cpu) computes bfloat16 in hardware: a CUDA GPU
    that supports it, or a CPU with AVX512-BF16 or AMX (where a bfloat16 base runs about twice as fast)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own feature checks
    return dev.type == "cpu" and any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def parse_dtype(name: str | torch.dtype, device: str | torch.device | None = None) -> torch.dtype:
    """``torch.float32`` from ``"float32"`` / ``"fp32"`` (bfloat16, float16 likewise), or a dtype as is.

    ``"auto"``: bfloat16 where ``device`` computes it in hardware (:func:`native_bf16`), else float32.
    """
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"dtype {name!r}: choose auto, float32, bfloat16 or float16") from None
