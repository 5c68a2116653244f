"""Closed-form baselines that fill the same maps as LinEAS: Linear-AcT and mean shift (LINEAS.md section 6).

Both use the fitting prompts and the module's pooling, so strength, apply, merge and evaluation work
on their maps unchanged; only the estimator differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from lineas.loss import quantile_grid

if TYPE_CHECKING:
    from lineas.datamodules import PromptPairDataModule
    from lineas.module import LinEASModule


def sorted_affine_fit(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per dimension, least squares of sorted target on sorted source: ``omega, beta`` of shape ``(D,)``.

    With unequal counts the pairs are the two quantile functions on their merged grid of levels,
    weighted by the width of each level interval (equal counts: plain least squares on sorted pairs).
    """
    xs, ys = source.float().sort(0).values, target.float().sort(0).values
    i, j, width = (a.to(xs.device) for a in quantile_grid(xs.shape[0], ys.shape[0]))
    x, y, p = xs[i], ys[j], width[:, None]
    mx, my = (p * x).sum(0), (p * y).sum(0)
    var = (p * (x - mx) ** 2).sum(0)
    cov = (p * (x - mx) * (y - my)).sum(0)
    flat = var <= 1e-12 * (p * x**2).sum(0).clamp_min(1e-30)
    omega = torch.where(flat, torch.ones_like(var), cov / var.clamp_min(1e-30))
    return omega, my - omega * mx


@torch.no_grad()
def mean_shift_(module: LinEASModule, dm: PromptPairDataModule) -> None:
    """``omega = 1``, ``beta = mean(target) - mean(source)`` at every site, from the unmapped model."""
    source = module.collect(dm.source_dataloader("fit"), with_maps=False)
    target = module.collect(dm.target_dataloader("fit"), with_maps=False)
    for k, (s, t) in enumerate(zip(source, target)):
        module.maps.omega[k].fill_(1.0)
        module.maps.beta[k].copy_(t.mean(0) - s.mean(0))


@torch.no_grad()
def linear_act_(module: LinEASModule, dm: PromptPairDataModule) -> None:
    """Linear-AcT, incremental: site by site, source and target re-collected with earlier maps applied."""
    for k in range(len(module.sites)):
        (source,) = module.collect(dm.source_dataloader("fit"), with_maps=True, site=k)
        (target,) = module.collect(dm.target_dataloader("fit"), with_maps=True, site=k)
        omega, beta = sorted_affine_fit(source, target)
        module.maps.omega[k].copy_(omega)
        module.maps.beta[k].copy_(beta)


ESTIMATORS: dict[str, Callable[[LinEASModule, PromptPairDataModule], None]] = {
    "mean_shift": mean_shift_,
    "linear_act": linear_act_,
}
