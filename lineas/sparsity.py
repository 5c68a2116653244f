"""L1 + group-lasso penalty on the maps, applied as a proximal step after each optimizer step."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch

from lineas.maps import AffineMaps


def prox_l1_group_(u: torch.Tensor, tau_l1: float, tau_group: float) -> torch.Tensor:
    """In place: soft-threshold ``u`` by ``tau_l1``, then shrink the whole vector by ``tau_group``.

    This is the exact proximal operator of ``tau_l1*||u||_1 + tau_group*||u||_2`` (sparse group lasso).
    """
    if tau_l1 > 0:
        u.copy_(u.sign() * (u.abs() - tau_l1).clamp_min(0))
    if tau_group > 0:
        u.mul_((1 - tau_group / u.norm().clamp_min(1e-30)).clamp_min(0))
    return u


@dataclass
class Sparsity:
    """Penalty ``l1*||u||_1 + group*sqrt(D)*||u||_2`` on ``u = omega-1`` and (times ``beta_scale``) on ``beta``.

    Each site's vector is one group. ``eps`` is the threshold of the reported support.

    With Adam, whose steps move a coordinate by about ``lr`` whatever its gradient's size, the soft
    threshold ``lr*l1`` competes with the step itself: ``l1 >= 1`` cancels nearly every step (the maps
    stay at identity), and below 1 a coordinate survives when its gradient keeps one sign from batch
    to batch. With the same prompts in every batch nearly all coordinates do, so ``l1`` then mostly
    slows the maps down; batches smaller than the fitting set make the selection real.
    """

    l1: float = 0.0
    group: float = 0.0
    beta_scale: float = 1.0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.l1 >= 1:
            warnings.warn(f"sparsity.l1={self.l1} >= 1: with Adam the soft threshold cancels about every step, "
                          "so the maps will stay near identity; try values in (0, 1)", stacklevel=3)

    @property
    def active(self) -> bool:
        return self.l1 > 0 or self.group > 0

    @torch.no_grad()
    def prox_(self, maps: AffineMaps, tau: float) -> None:
        """One proximal step with step size ``tau`` (the learning rate just used)."""
        if not self.active:
            return
        for omega, beta in zip(maps.omega, maps.beta):
            g = self.group * math.sqrt(omega.numel())
            u = omega.data - 1
            prox_l1_group_(u, tau * self.l1, tau * g)
            omega.data.copy_(u + 1)
            prox_l1_group_(beta.data, tau * self.l1 * self.beta_scale, tau * g * self.beta_scale)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
