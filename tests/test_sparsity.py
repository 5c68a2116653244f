"""The sparse-group-lasso proximal step and the support count, against numpy closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lineas import AffineMaps, Sparsity
from lineas.sparsity import prox_l1_group_


def prox_reference(u: np.ndarray, tau_l1: float, tau_group: float) -> np.ndarray:
    """Elementwise soft-threshold, then shrink the whole vector towards 0 by tau_group in norm."""
    v = np.array([np.sign(a) * max(abs(a) - tau_l1, 0.0) for a in u.astype(np.float64)])
    norm = math.sqrt(sum(a * a for a in v))
    scale = max(0.0, 1.0 - tau_group / norm) if norm > 0 else 0.0
    return v * scale


@pytest.mark.parametrize("tau_l1,tau_group", [(0.3, 0.0), (0.0, 0.7), (0.25, 0.4), (0.0, 0.0), (0.05, 1.5)])
def test_prox_l1_group_matches_closed_form(rng, tau_l1, tau_group):
    u_np = rng.normal(size=17).astype(np.float32)
    u = torch.from_numpy(u_np.copy())
    out = prox_l1_group_(u, tau_l1, tau_group)
    assert out is u  # in place
    expected = prox_reference(u_np, tau_l1, tau_group)
    np.testing.assert_allclose(u.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    # The soft-threshold zeroes exactly the small entries.
    if tau_l1 > 0:
        assert torch.equal(u == 0, torch.from_numpy(np.abs(u_np) <= tau_l1))


def test_prox_group_shrink_zeroes_the_whole_vector(rng):
    u_np = rng.normal(size=8).astype(np.float32)
    tau_l1 = 0.1
    after_l1 = prox_reference(u_np, tau_l1, 0.0)
    tau_group = float(np.linalg.norm(after_l1)) * 1.01  # just above the norm left by the soft-threshold
    u = torch.from_numpy(u_np.copy())
    prox_l1_group_(u, tau_l1, tau_group)
    assert np.all(prox_reference(u_np, tau_l1, tau_group) == 0)
    assert torch.equal(u, torch.zeros(8))
    # Just below the norm the vector survives, shrunk by exactly (1 - tau_group/norm).
    u = torch.from_numpy(u_np.copy())
    prox_l1_group_(u, tau_l1, 0.9 * float(np.linalg.norm(after_l1)))
    np.testing.assert_allclose(u.double().numpy(), 0.1 * after_l1, rtol=1e-4, atol=1e-6)


def test_prox_of_zero_vector_stays_zero_without_nan():
    u = torch.zeros(5)
    prox_l1_group_(u, 0.1, 0.3)
    assert torch.equal(u, torch.zeros(5))
    u = torch.tensor([0.05, -0.02, 0.0])  # all killed by the soft-threshold, then a group step on zeros
    prox_l1_group_(u, 0.1, 0.3)
    assert torch.equal(u, torch.zeros(3))


def _random_maps(rng: np.random.Generator, dims: list[int], scale: float = 0.3) -> AffineMaps:
    maps = AffineMaps([f"layer{i}.out" for i in range(len(dims))], dims)
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            w.copy_(torch.from_numpy(1 + scale * rng.normal(size=w.numel())).float())
            b.copy_(torch.from_numpy(scale * rng.normal(size=b.numel())).float())
    return maps


@pytest.mark.parametrize("l1,group,beta_scale", [(0.5, 0.0, 1.0), (0.0, 0.4, 1.0), (0.3, 0.2, 0.5), (0.2, 0.1, 3.0)])
def test_sparsity_prox_on_maps(rng, l1, group, beta_scale):
    dims = [5, 9, 16]
    maps = _random_maps(rng, dims)
    before = [(w.detach().double().numpy().copy(), b.detach().double().numpy().copy())
              for w, b in zip(maps.omega, maps.beta)]
    tau = 0.2
    Sparsity(l1=l1, group=group, beta_scale=beta_scale).prox_(maps, tau=tau)
    for (w0, b0), w, b, d in zip(before, maps.omega, maps.beta, dims):
        g = group * math.sqrt(d)  # group weight grows with sqrt(D)
        exp_w = 1 + prox_reference(w0 - 1, tau * l1, tau * g)
        exp_b = prox_reference(b0, tau * l1 * beta_scale, tau * g * beta_scale)
        assert w.dtype == torch.float32 and b.dtype == torch.float32
        np.testing.assert_allclose(w.detach().double().numpy(), exp_w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.detach().double().numpy(), exp_b, rtol=1e-5, atol=1e-6)


def test_sparsity_group_uses_sqrt_dim_per_site():
    # Two sites with the same per-dimension deviation: ||u|| = 0.1*sqrt(D), so a group weight of
    # 0.1/tau zeroes both only because it is multiplied by sqrt(D); 0.099/tau keeps both alive.
    maps = AffineMaps(["a", "b"], [4, 25])
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            w.fill_(1.1)
            b.fill_(-0.1)
    tau = 0.5
    Sparsity(group=0.1001 / tau).prox_(maps, tau)
    for w, b in zip(maps.omega, maps.beta):
        assert torch.equal(w.detach(), torch.ones_like(w))
        assert torch.equal(b.detach(), torch.zeros_like(b))
    assert maps.support()["total"] == 0

    maps2 = AffineMaps(["a", "b"], [4, 25])
    with torch.no_grad():
        for w, b in zip(maps2.omega, maps2.beta):
            w.fill_(1.1)
            b.fill_(-0.1)
    Sparsity(group=0.099 / tau).prox_(maps2, tau)
    for w, b in zip(maps2.omega, maps2.beta):
        # shrink factor 1 - 0.099*sqrt(D)/(0.1*sqrt(D)) = 0.01, the same for both sites
        np.testing.assert_allclose((w.detach().double() - 1).numpy(), 0.001, rtol=1e-3)
        np.testing.assert_allclose(b.detach().double().numpy(), -0.001, rtol=1e-3)


def test_inactive_sparsity_leaves_maps_untouched(rng):
    maps = _random_maps(rng, [3, 7])
    before = {k: v.clone() for k, v in maps.state_dict().items()}
    s = Sparsity()
    assert not s.active
    s.prox_(maps, tau=1.0)
    for k, v in maps.state_dict().items():
        assert torch.equal(v, before[k])
    assert Sparsity(l1=1e-3).active and Sparsity(group=1e-3).active
    assert Sparsity(l1=0.1, group=0.2, beta_scale=0.5, eps=1e-4).as_dict() == {
        "l1": 0.1, "group": 0.2, "beta_scale": 0.5, "eps": 1e-4}


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


def test_l1_of_one_cancels_adams_first_step():
    # Adam's first step moves every coordinate by exactly lr; a soft threshold of lr*l1 >= lr undoes it.
    lr = 0.05
    for l1, moved in ((1.0, False), (0.9, True)):
        maps = AffineMaps(["a", "b"], [6, 3])
        opt = torch.optim.Adam(maps.parameters(), lr=lr, betas=(0.9, 0.9))
        sum(((w - 2) ** 2).sum() + ((b + 3) ** 2).sum() for w, b in zip(maps.omega, maps.beta)).backward()
        opt.step()
        if l1 >= 1:
            with pytest.warns(UserWarning, match="l1=1.0 >= 1"):
                sparsity = Sparsity(l1=l1)
        else:
            sparsity = Sparsity(l1=l1)
        sparsity.prox_(maps, tau=lr)
        assert (maps.support()["total"] > 0) == moved
        if moved:  # what survives is the step minus the threshold: lr * (1 - l1)
            torch.testing.assert_close(maps.omega[0], torch.full((6,), 1 + lr * (1 - l1)))
