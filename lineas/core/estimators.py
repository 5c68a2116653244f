"""Closed-form baselines that fill the same maps as LinEAS: Linear-AcT and mean shift
(docs/method.md#baselines-linear-act-and-mean-shift).

Both run as the official Linear-AcT code does (apple/ml-act, ``linear_ot`` / ``mean_ot``): incremental,
site by site in module order, each site's source and target samples re-collected with every earlier
(clipped) map active and the forward stopped right after that site; optionally, each map is clipped
to quantiles of that site's pooled source samples (official default for Linear-AcT: min and max).
They use the module's pooling, so strength, apply, evaluation (and, unclipped, merge) work unchanged.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from lineas.core.errors import ConfigError
from lineas.core.loss import quantile_grid
from lineas.core.maps import AffineMaps

SiteFit = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Collect(Protocol):
    def __call__(self, side: str, site: int) -> torch.Tensor:
        """Pooled samples ``(N, D)`` of the ``side`` ("source" / "target") fitting prompts at site ``site``,
        from a forward with the maps active that stops right after that site."""


def sorted_affine_fit(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per dimension, least squares of sorted target on sorted source, in float64: ``omega, beta`` ``(D,)``.

    ``omega = sum(xc*yc) / sum(xc*xc)`` on the centred sorted pairs, ``beta = mean(y) - omega*mean(x)``.
    With unequal counts the pairs are the two quantile functions on their merged grid of levels,
    weighted by the width of each level interval. A dimension whose source is constant keeps
    ``omega = 1`` (the official code adds 1e-8 noise there instead; its clip then never applies the map).
    """
    xs, ys = source.double().sort(0).values, target.double().sort(0).values
    i, j, width = (a.to(xs.device) for a in quantile_grid(xs.shape[0], ys.shape[0]))
    x, y, p = xs[i], ys[j], width.double()[:, None]
    mx, my = (p * x).sum(0), (p * y).sum(0)
    var = (p * (x - mx) ** 2).sum(0)
    cov = (p * (x - mx) * (y - my)).sum(0)
    flat = var <= 1e-12 * (p * x**2).sum(0).clamp_min(1e-300)
    omega = torch.where(flat, torch.ones_like(var), cov / var.clamp_min(1e-300))
    return omega.float(), (my - omega * mx).float()


def mean_difference(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``omega = 1``, ``beta = mean(target) - mean(source)`` (computed in float64)."""
    beta = target.double().mean(0) - source.double().mean(0)
    return torch.ones_like(beta, dtype=torch.float32), beta.float()


def quantile_levels(quantiles: Sequence[float]) -> tuple[float, float]:
    """``(low, high)`` percent as levels in [0, 1]; a clear error for anything else."""
    levels = tuple(float(q) / 100 for q in quantiles)
    if len(levels) != 2 or not 0 <= levels[0] < levels[1] <= 1:
        raise ConfigError(f"clip_quantiles {list(quantiles)}: give [low, high] with 0 <= low < high <= 100 (percent)")
    return levels


def source_bounds(source: torch.Tensor, quantiles: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per dimension, the ``quantiles`` (in percent, e.g. ``(0, 100)`` = min and max) of the source samples."""
    lo_q, hi_q = quantile_levels(quantiles)
    x = source.float()
    lo = x.amin(0) if lo_q == 0 else torch.quantile(x, lo_q, dim=0)
    hi = x.amax(0) if hi_q == 1 else torch.quantile(x, hi_q, dim=0)
    return lo, hi


@torch.no_grad()
def fit_incremental_(
    maps: AffineMaps, collect: Collect, fit: SiteFit, clip_quantiles: Sequence[float] | None = (0.0, 100.0)
) -> None:
    """Fit ``maps`` site by site with ``fit``; each site's samples come with all earlier maps active.

    With ``clip_quantiles``, each map is restricted to the open interval between those quantiles of
    its own site's source samples (Linear-AcT's support clip).
    """
    for k in range(len(maps.sites)):
        source, target = collect("source", k), collect("target", k)
        omega, beta = fit(source, target)
        maps.omega[k].copy_(omega)
        maps.beta[k].copy_(beta)
        if clip_quantiles is not None:
            maps.clip_(k, *source_bounds(source, clip_quantiles))


ESTIMATORS: dict[str, SiteFit] = {
    "linear_act": sorted_affine_fit,
    "mean_shift": mean_difference,
}
