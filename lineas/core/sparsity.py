"""L1 + group-lasso penalty on the maps, applied as a proximal step in the optimizer's own metric.

After an optimizer step ``u <- u - P m`` with a diagonal preconditioner ``P = diag(tau)`` (Adam:
``tau_i = lr / (sqrt(v_hat_i) + eps)``; plain SGD: ``tau_i = lr``), the proximal step solves

    min_x  1/2 * sum_i (x_i - u_i)**2 / tau_i  +  l1 * ||x||_1  +  g * ||x||_2

so the fixed points of "step, then prox" are exactly the stationary points of loss + penalty: a
coordinate stays at zero when its gradient is below ``l1``, whatever the optimizer (LINEAS.md section 4).
A prox with the scalar ``tau = lr`` after Adam would compete with Adam's ~``lr`` steps instead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from lineas.core.errors import ConfigError
from lineas.core.maps import AffineMaps

_BISECTION_STEPS = 60  # relative precision 2**-60 of the group norm


def prox_l1_group_(u: torch.Tensor, tau: torch.Tensor | float, l1: float, group: float) -> torch.Tensor:
    """In place: the proximal operator of ``l1*||u||_1 + group*||u||_2`` in the metric ``diag(1/tau)``.

    ``tau`` is a scalar or a per-coordinate tensor of step sizes. The weighted soft-threshold
    ``sign(u)*max(|u| - tau*l1, 0)`` comes first; the group step then scales each coordinate by
    ``r / (r + group*tau_i)``, where ``r`` (the result's norm) solves ``sum_i (s_i/(r + group*tau_i))**2 = 1``
    (bisection on ``(0, ||s||]``), or zeroes the group when ``||s/tau|| <= group``. With a scalar ``tau``
    this is the Euclidean sparse-group-lasso prox: shrink by ``1 - tau*group/||s||``.
    """
    tau = torch.as_tensor(tau, dtype=u.dtype, device=u.device).expand_as(u)
    if l1 > 0:
        u.copy_(u.sign() * (u.abs() - tau * l1).clamp_min(0))
    if group <= 0:
        return u
    s = u.double()
    c = group * tau.double()
    if float((s / c).norm()) <= 1.0:
        return u.zero_()
    lo, hi = torch.zeros((), dtype=torch.float64), s.norm()
    for _ in range(_BISECTION_STEPS):  # phi(r) = sum (s/(r+c))**2 - 1 decreases in r; phi(||s||) < 0 < phi(0)
        r = (lo + hi) / 2
        inside = (s / (r + c)).pow(2).sum() > 1
        lo, hi = torch.where(inside, r, lo), torch.where(inside, hi, r)
    r = (lo + hi) / 2
    return u.copy_((s * r / (r + c)).to(u.dtype))


def step_sizes(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> torch.Tensor | float | None:
    """Per-coordinate size of ``optimizer``'s last step for ``param``: its metric. None if not optimised.

    Adam / AdamW: ``lr / (sqrt(v_hat) + eps)`` with ``v_hat`` the bias-corrected second moment
    (``max_exp_avg_sq`` with amsgrad); SGD: ``lr * (1 - dampening) / (1 - momentum)``, the step that a
    gradient held constant settles to (plain SGD: ``lr``, the paper's Algorithm 1); any other optimizer: its ``lr``.
    """
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            break
    else:
        return None
    state = optimizer.state.get(param, {})
    if "exp_avg_sq" not in state:
        momentum = group.get("momentum", 0.0) if isinstance(optimizer, torch.optim.SGD) else 0.0
        return float(group["lr"]) * (1 - group.get("dampening", 0.0) if momentum else 1.0) / (1 - momentum)
    v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    v_hat = v / (1 - group["betas"][1] ** float(state["step"]))
    return group["lr"] / (v_hat.sqrt() + group["eps"])


@dataclass
class Sparsity:
    """Penalty ``l1*||u||_1 + group*sqrt(D)*||u||_2`` on ``u = omega-1`` and (times ``beta_scale``) on ``beta``.

    Each site's vector is one group. ``l1`` and ``group`` are in the units of the loss's gradient: a
    coordinate whose loss gradient stays below ``l1`` in magnitude is held at zero. ``eps`` is the
    threshold of the reported support.
    """

    l1: float = 0.0
    group: float = 0.0
    beta_scale: float = 1.0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if min(self.l1, self.group, self.beta_scale) < 0:
            raise ConfigError(
                f"sparsity weights must be >= 0 (l1={self.l1}, group={self.group}, beta_scale={self.beta_scale})"
            )

    @property
    def active(self) -> bool:
        return self.l1 > 0 or self.group > 0

    @torch.no_grad()
    def prox_(self, maps: AffineMaps, optimizer: torch.optim.Optimizer) -> None:
        """One proximal step after ``optimizer``'s step, in its metric (see :func:`step_sizes`)."""
        if not self.active:
            return
        optimizer = getattr(optimizer, "optimizer", optimizer)  # unwrap Lightning's LightningOptimizer
        for omega, beta in zip(maps.omega, maps.beta):
            g = self.group * math.sqrt(omega.numel())
            tau = step_sizes(optimizer, omega)
            if tau is not None:
                u = omega.data - 1
                prox_l1_group_(u, tau, self.l1, g)
                omega.data.copy_(u + 1)
            tau = step_sizes(optimizer, beta)
            if tau is not None:
                prox_l1_group_(beta.data, tau, self.l1 * self.beta_scale, g * self.beta_scale)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
