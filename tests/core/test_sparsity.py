"""The sparse-group-lasso proximal step in the optimizer's metric: closed forms, optimality, convergence."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from lineas import AffineMaps, Sparsity
from lineas.core.sparsity import prox_l1_group_, step_sizes
from lineas.training.optim import default_optimizer, default_scheduler, make_optimizer
from tests.helpers import random_maps


def prox_reference(u: np.ndarray, tau_l1: float, tau_group: float) -> np.ndarray:
    """Euclidean metric: elementwise soft-threshold, then shrink the whole vector towards 0 by tau_group in norm."""
    v = np.array([np.sign(a) * max(abs(a) - tau_l1, 0.0) for a in u.astype(np.float64)])
    norm = math.sqrt(sum(a * a for a in v))
    scale = max(0.0, 1.0 - tau_group / norm) if norm > 0 else 0.0
    return v * scale


def prox_objective(x: np.ndarray, u: np.ndarray, tau: np.ndarray, l1: float, group: float) -> float:
    return float(0.5 * np.sum((x - u) ** 2 / tau) + l1 * np.abs(x).sum() + group * np.linalg.norm(x))


@pytest.mark.parametrize("tau_l1,tau_group", [(0.3, 0.0), (0.0, 0.7), (0.25, 0.4), (0.0, 0.0), (0.05, 1.5)])
def test_scalar_metric_prox_matches_the_euclidean_closed_form(rng, tau_l1, tau_group):
    u_np = rng.normal(size=17).astype(np.float32)
    u = torch.from_numpy(u_np.copy())
    tau = 0.5
    out = prox_l1_group_(u, tau, tau_l1 / tau, tau_group / tau)
    assert out is u  # in place
    np.testing.assert_allclose(u.double().numpy(), prox_reference(u_np, tau_l1, tau_group), rtol=1e-5, atol=1e-6)
    if tau_l1 > 0:  # the soft-threshold zeroes exactly the small entries
        assert torch.equal(u == 0, torch.from_numpy(np.abs(u_np) <= tau_l1))


@pytest.mark.parametrize("l1,group", [(0.4, 0.0), (0.0, 0.8), (0.3, 0.5), (0.1, 3.0)])
def test_diagonal_metric_prox_is_the_minimiser(rng, l1, group):
    # Step sizes over four orders of magnitude, as Adam's are.
    u_np = rng.normal(size=12)
    tau_np = 10.0 ** rng.uniform(-2, 2, size=12)
    u = torch.from_numpy(u_np.copy())
    prox_l1_group_(u, torch.from_numpy(tau_np), l1, group)
    x = u.numpy()
    best = min(
        (
            minimize(
                prox_objective,
                start,
                args=(u_np, tau_np, l1, group),
                method="Powell",
                options={"xtol": 1e-10, "ftol": 1e-14, "maxfev": 200000},
            )
            for start in (u_np, np.zeros(12), x + 1e-3)
        ),
        key=lambda r: r.fun,
    )
    assert prox_objective(x, u_np, tau_np, l1, group) <= best.fun + 1e-9
    # Optimality, coordinate by coordinate (the subgradient conditions).
    nz = x != 0
    norm = np.linalg.norm(x)
    if nz.any():
        grad = (x - u_np) / tau_np + l1 * np.sign(x) + group * x / norm
        np.testing.assert_allclose(grad[nz], 0, atol=1e-8)
    if nz.any():  # a zero coordinate of a surviving group: its scaled input is within the threshold
        assert np.all(np.abs(u_np[~nz]) / tau_np[~nz] <= l1 + 1e-12)


def test_group_prox_zeroes_the_group_exactly_when_the_scaled_norm_is_below_the_weight(rng):
    u_np = rng.normal(size=8)
    tau_np = 10.0 ** rng.uniform(-1, 1, size=8)
    edge = float(np.linalg.norm(u_np / tau_np))
    for group, zero in ((edge * 1.001, True), (edge * 0.999, False)):
        u = torch.from_numpy(u_np.copy())
        prox_l1_group_(u, torch.from_numpy(tau_np), 0.0, group)
        assert bool((u == 0).all()) == zero


def test_prox_of_zero_vector_stays_zero_without_nan():
    u = torch.zeros(5)
    prox_l1_group_(u, 1.0, 0.1, 0.3)
    assert torch.equal(u, torch.zeros(5))
    u = torch.tensor([0.05, -0.02, 0.0])  # all killed by the soft-threshold, then a group step on zeros
    prox_l1_group_(u, 1.0, 0.1, 0.3)
    assert torch.equal(u, torch.zeros(3))


def test_step_sizes_are_adams_preconditioner_and_sgds_lr():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([p], lr=0.1, betas=(0.9, 0.8), eps=1e-6)
    assert step_sizes(opt, p) == 0.1  # no state yet
    g = torch.tensor([1.0, -2.0, 0.5, 0.0])
    for _ in range(3):
        p.grad = g.clone()
        opt.step()
    v_hat = g**2  # three equal gradients: the bias-corrected second moment is g**2
    torch.testing.assert_close(step_sizes(opt, p), 0.1 / (v_hat.sqrt() + 1e-6))
    q = torch.nn.Parameter(torch.zeros(2))
    sgd = torch.optim.SGD([q], lr=0.3)
    assert step_sizes(sgd, q) == 0.3
    heavy = torch.optim.SGD([q], lr=0.3, momentum=0.9, dampening=0.5)  # a constant gradient settles to this step
    assert step_sizes(heavy, q) == pytest.approx(0.3 * 0.5 / 0.1)
    assert step_sizes(sgd, p) is None  # not optimised by it


def _fit_quadratic(
    a: torch.Tensor,
    c: torch.Tensor,
    d: torch.Tensor,
    sparsity: Sparsity,
    steps: int = 3000,
    lr: float = 3e-2,
    optimizer: Any = None,
) -> AffineMaps:
    """Optimizer + prox on ``0.5*sum a*(omega-1-c)**2 + 0.5*sum a*(beta-d)**2`` with cosine decay, as the module
    builds them (default: Adam with betas (0.9, 0.9))."""
    maps = AffineMaps(["s"], [a.numel()])
    opt = make_optimizer(optimizer or default_optimizer(), maps.parameters(), lr)
    sched = default_scheduler()(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * (a * (maps.omega[0] - 1 - c) ** 2).sum() + 0.5 * (a * (maps.beta[0] - d) ** 2).sum()
        loss.backward()
        opt.step()
        sparsity.prox_(maps, opt)
        sched.step()
    return maps


@pytest.mark.parametrize(
    "optimizer, lr",
    [
        (None, 3e-2),  # Adam: the prox in its metric
        (functools.partial(torch.optim.SGD), 0.15),  # the paper's Algorithm 1: a gradient step, prox at tau = lr
        (functools.partial(torch.optim.SGD, momentum=0.9), 0.15),
        (functools.partial(torch.optim.AdamW, betas=(0.9, 0.9), weight_decay=0.0), 3e-2),
    ],
    ids=["adam", "sgd", "sgd-momentum", "adamw"],
)
def test_optimizer_with_prox_converges_to_the_lasso_solution(rng, optimizer, lr):
    # Separable quadratic: the lasso solution is the soft-threshold of c at l1 / a, coordinate by coordinate.
    a = torch.from_numpy(10.0 ** rng.uniform(-1, 1, size=24)).float()
    c = torch.from_numpy(rng.normal(size=24)).float()
    d = torch.from_numpy(rng.normal(size=24)).float()
    l1 = 0.3
    maps = _fit_quadratic(a, c, d, Sparsity(l1=l1, beta_scale=2.0), lr=lr, optimizer=optimizer)
    u_star = c.sign() * (c.abs() - l1 / a).clamp_min(0)
    b_star = d.sign() * (d.abs() - 2.0 * l1 / a).clamp_min(0)
    assert 4 <= int((u_star == 0).sum()) <= 20  # the draw has zeros and non-zeros
    u = maps.omega[0].detach() - 1
    torch.testing.assert_close(u, u_star, atol=2e-3, rtol=0)
    torch.testing.assert_close(maps.beta[0].detach(), b_star, atol=2e-3, rtol=0)
    assert torch.equal(u == 0, u_star == 0)  # exactly the zeros of the solution
    assert torch.equal(maps.beta[0].detach() == 0, b_star == 0)


def test_l1_above_every_gradient_keeps_the_maps_at_identity(rng):
    a = torch.from_numpy(10.0 ** rng.uniform(-1, 1, size=10)).float()
    c = torch.from_numpy(rng.normal(size=10)).float()
    d = torch.from_numpy(rng.normal(size=10)).float()
    l1 = 1.01 * float(max((a * c).abs().max(), (a * d).abs().max()))  # the largest gradient at identity
    maps = _fit_quadratic(a, c, d, Sparsity(l1=l1), steps=300)
    assert maps.support()["total"] == 0
    below = _fit_quadratic(a, c, d, Sparsity(l1=0.9 * l1), steps=300)
    assert below.support()["total"] > 0


def test_adam_with_group_prox_converges_to_the_group_lasso_solution(rng):
    # Equal curvature a: the solution is soft-threshold(c, l1/a), then shrink by 1 - g*sqrt(D) / (a*||.||).
    D, a0 = 16, 2.0
    a = torch.full((D,), a0)
    c = torch.from_numpy(rng.normal(size=D)).float()
    l1, group = 0.2, 0.15
    maps = _fit_quadratic(a, c, torch.zeros(D), Sparsity(l1=l1, group=group), steps=1000)
    s = c.sign() * (c.abs() - l1 / a0).clamp_min(0)
    u_star = s * max(0.0, 1 - group * math.sqrt(D) / (a0 * float(s.norm())))
    assert float(u_star.norm()) > 0.1
    torch.testing.assert_close(maps.omega[0].detach() - 1, u_star, atol=2e-3, rtol=0)
    # Above the group threshold the whole site goes back to identity.
    zero = _fit_quadratic(
        a, c, torch.zeros(D), Sparsity(l1=l1, group=1.05 * a0 * float(s.norm()) / math.sqrt(D)), steps=1000
    )
    assert zero.support()["total"] == 0


def test_prox_with_plain_lr_after_adam_does_not_select(rng):
    # The rule this replaces: a threshold lr*l1 after Adam's ~lr steps. With l1 below every gradient
    # but above the smaller ones, it still leaves every coordinate non-zero; the metric prox selects.
    a = torch.from_numpy(10.0 ** rng.uniform(-1, 1, size=24)).float()
    c = torch.from_numpy(rng.normal(size=24)).float()
    l1 = 0.3
    maps = AffineMaps(["s"], [24])
    opt = torch.optim.Adam([maps.omega[0]], lr=3e-2, betas=(0.9, 0.9))
    for _ in range(600):
        opt.zero_grad()
        (0.5 * a * (maps.omega[0] - 1 - c) ** 2).sum().backward()
        opt.step()
        with torch.no_grad():
            prox_l1_group_(maps.omega[0].data.sub_(1), 3e-2, l1, 0.0).add_(1)
    u_star = c.sign() * (c.abs() - l1 / a).clamp_min(0)
    assert int((maps.omega[0] == 1).sum()) < int((u_star == 0).sum())


def _layer_sites(dims: list[int]) -> list[str]:
    return [f"layer{i}.out" for i in range(len(dims))]


def test_sparsity_prox_on_maps_uses_each_parameters_own_metric(rng):
    dims = [5, 9]
    maps = random_maps(_layer_sites(dims), dims, scale=0.3, generator=rng)
    opt = torch.optim.Adam(maps.parameters(), lr=0.1, betas=(0.9, 0.9))
    sum((w**3).sum() + (b**2 * 3).sum() for w, b in zip(maps.omega, maps.beta)).backward()
    opt.step()
    before = [(w.detach().double().clone(), b.detach().double().clone()) for w, b in zip(maps.omega, maps.beta)]
    l1, group, beta_scale = 0.3, 0.05, 0.5
    Sparsity(l1=l1, group=group, beta_scale=beta_scale).prox_(maps, opt)
    for (w0, b0), w, b, d in zip(before, maps.omega, maps.beta, dims):
        g = group * math.sqrt(d)  # group weight grows with sqrt(D)
        exp_u = prox_l1_group_((w0 - 1).clone(), step_sizes(opt, w).double(), l1, g)
        exp_b = prox_l1_group_(b0.clone(), step_sizes(opt, b).double(), l1 * beta_scale, g * beta_scale)
        torch.testing.assert_close(w.detach().double() - 1, exp_u, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b.detach().double(), exp_b, atol=1e-6, rtol=1e-5)


def test_inactive_sparsity_leaves_maps_untouched(rng):
    maps = random_maps(_layer_sites([3, 7]), [3, 7], scale=0.3, generator=rng)
    opt = torch.optim.SGD(maps.parameters(), lr=1.0)
    before = {k: v.clone() for k, v in maps.state_dict().items()}
    s = Sparsity()
    assert not s.active
    s.prox_(maps, opt)
    for k, v in maps.state_dict().items():
        assert torch.equal(v, before[k])
    assert Sparsity(l1=1e-3).active and Sparsity(group=1e-3).active
    assert Sparsity(l1=0.1, group=0.2, beta_scale=0.5, eps=1e-4).as_dict() == {
        "l1": 0.1,
        "group": 0.2,
        "beta_scale": 0.5,
        "eps": 1e-4,
    }
    with pytest.raises(ValueError, match="must be >= 0"):
        Sparsity(l1=-1.0)


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.05])
def test_support_counts_against_direct_count(rng, eps):
    dims = [6, 10, 3]
    maps = AffineMaps(["s0", "s1:1", "s2"], dims)
    # Deviations chosen well away from eps: 0, eps/3, 3*eps, or large, on omega and/or beta.
    choices = np.array([0.0, eps / 3, 3 * eps, 0.5])
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            du = rng.choice(choices, size=w.numel()) * rng.choice([-1, 1], size=w.numel())
            db = rng.choice(choices, size=w.numel()) * rng.choice([-1, 1], size=w.numel())
            w.copy_(torch.from_numpy(1 + du).float())
            b.copy_(torch.from_numpy(db).float())
    expected = {}
    for s, w, b in zip(["s0", "s1:1", "s2"], maps.omega, maps.beta):
        wn, bn = w.detach().double().numpy(), b.detach().double().numpy()
        expected[s] = sum(1 for k in range(len(wn)) if abs(wn[k] - 1) > eps or abs(bn[k]) > eps)
    expected["total"] = sum(expected.values())
    assert 0 < expected["total"] < sum(dims)  # the draw exercises both sides of eps
    assert maps.support(eps) == expected


def test_support_counts_a_dimension_once_and_identity_is_empty():
    maps = AffineMaps(["a"], [4])
    assert maps.support() == {"a": 0, "total": 0}
    with torch.no_grad():
        maps.omega[0].copy_(torch.tensor([1.5, 1.0, 1.5, 1.0]))
        maps.beta[0].copy_(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert maps.support() == {"a": 3, "total": 3}
