"""Pooling site outputs into samples, and the sorted 1-D Wasserstein-2 loss."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch

from lineas.core.errors import ConfigError, PromptFileError, SiteError

Pooling = Literal["mean", "token"]


def pool(x: torch.Tensor, mask: torch.Tensor | None, mode: Pooling = "mean") -> torch.Tensor:
    """Samples ``(N, D)`` in float32 from a site output.

    ``(B, T, D)`` with a ``(B, T)`` mask of real positions: ``mean`` = masked mean per prompt,
    ``token`` = every real position is a sample. ``(B, C, H, W)``: the same over space, channel-wise.
    ``(B, D)``: one sample per row. Every row of ``mask`` needs a real position (see :func:`check_mask`).
    """
    x = x.float()
    if x.ndim == 4:
        x = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        mask = None
    if x.ndim == 2:
        return x
    if x.ndim != 3:
        raise SiteError(
            f"cannot pool a site output of shape {tuple(x.shape)}: pick sites whose outputs are "
            "(batch, tokens, features), (batch, channels, height, width) or (batch, features)"
        )
    if mask is None:
        return x.mean(1) if mode == "mean" else x.flatten(0, 1)
    mask = mask.to(x.device, torch.bool)
    if mode == "token":
        return x[mask]
    if mode != "mean":
        raise ConfigError(f"pooling {mode!r}: choose 'mean' or 'token'")
    return torch.where(mask.unsqueeze(-1), x, 0).sum(1) / mask.sum(1, keepdim=True)


def check_mask(mask: torch.Tensor | None) -> None:
    """Refuse a batch in which a prompt has no real position to pool (one check per batch)."""
    if mask is not None and not bool(mask.any(1).all()):
        raise PromptFileError("a prompt has no real positions to pool (only padding or BOS): drop empty prompts")


@lru_cache(maxsize=64)
def quantile_grid(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Breakpoints of both empirical quantile functions; between two consecutive ones both are constant.
    t = torch.unique(
        torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m])
    )
    width = torch.diff(t, prepend=t.new_zeros(1))
    mid = t - width / 2
    i = (mid * n).floor().long().clamp_max(n - 1)
    j = (mid * m).floor().long().clamp_max(m - 1)
    return i, j, width.float()


def sorted_w2(source: torch.Tensor, target_sorted: torch.Tensor) -> torch.Tensor:
    """Squared 1-D Wasserstein-2 distance per dimension, shape ``(D,)``.

    ``source`` is ``(n, D)`` (sorted here, differentiably); ``target_sorted`` is ``(m, D)`` already
    sorted along dim 0. Exact for any ``n, m``: the integral over quantile levels of the squared
    difference of the two step quantile functions; with ``n == m`` it is ``mean((xs - ys)**2)``.
    """
    n, m = source.shape[0], target_sorted.shape[0]
    if n < 1 or m < 1:
        raise ValueError(f"W2 needs samples on both sides (got {n} source, {m} target)")
    xs = source.float().sort(dim=0).values
    ys = target_sorted.float()
    if n == m:
        return (xs - ys).pow(2).mean(0)
    i, j, width = (a.to(xs.device) for a in quantile_grid(n, m))
    return ((xs[i] - ys[j]).pow(2) * width[:, None]).sum(0)
