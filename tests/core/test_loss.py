"""``sorted_w2`` against optimal-transport solved other ways, its gradient, and ``pool``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment, linprog
from scipy.stats import wasserstein_distance

from lineas import pool, sorted_w2
from lineas.core.loss import quantile_grid


# --- independent references ---------------------------------------------------------------
def w2_assignment(x: np.ndarray, y: np.ndarray) -> float:
    """Squared W2 of two equal-size 1-D samples: mean cost of the optimal assignment."""
    assert len(x) == len(y)
    cost = (x[:, None] - y[None, :]) ** 2
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def w2_lp(x: np.ndarray, y: np.ndarray) -> float:
    """Squared W2 of two 1-D samples with uniform weights 1/n, 1/m: the OT linear program."""
    n, m = len(x), len(y)
    cost = (x[:, None] - y[None, :]) ** 2
    a_eq = np.zeros((n + m, n * m))
    for i in range(n):
        a_eq[i, i * m : (i + 1) * m] = 1.0  # row sums
    for j in range(m):
        a_eq[n + j, j::m] = 1.0  # column sums
    b_eq = np.concatenate([np.full(n, 1.0 / n), np.full(m, 1.0 / m)])
    # One constraint is redundant (both marginals sum to 1); drop it for a full-rank system.
    res = linprog(cost.ravel(), A_eq=a_eq[:-1], b_eq=b_eq[:-1], bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    plan = res.x.reshape(n, m)
    np.testing.assert_allclose(plan.sum(1), 1.0 / n, atol=1e-9)
    np.testing.assert_allclose(plan.sum(0), 1.0 / m, atol=1e-9)
    return float(res.fun)


def _samples(rng: np.random.Generator, n: int, m: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """float32-representable float64 samples; the target differs in location and scale per dimension."""
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(m, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(0, 1.5, size=d)
    return x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)


def _ours(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ys = torch.from_numpy(y).sort(0).values
    out = sorted_w2(torch.from_numpy(x), ys)
    assert out.shape == (x.shape[1],)
    assert out.dtype == torch.float32
    return out.double().numpy()


# --- values -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_sorted_w2_equal_counts_matches_optimal_assignment(rng, n):
    x, y = _samples(rng, n, n, d=6)
    ref = np.array([w2_assignment(x[:, k], y[:, k]) for k in range(x.shape[1])])
    np.testing.assert_allclose(_ours(x, y), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,m", [(5, 3), (7, 4), (3, 8), (6, 4), (4, 6), (1, 5), (5, 1), (9, 9), (10, 7)])
def test_sorted_w2_matches_ot_linear_program(rng, n, m):
    x, y = _samples(rng, n, m, d=5)
    ref = np.array([w2_lp(x[:, k], y[:, k]) for k in range(x.shape[1])])
    np.testing.assert_allclose(_ours(x, y), ref, rtol=1e-5, atol=1e-6)


def test_sorted_w2_with_ties_matches_linear_program(rng):
    # Repeated values on both sides (e.g. identical BOS activations, quantised models).
    x = rng.integers(-2, 3, size=(7, 4)).astype(np.float64)
    y = rng.integers(-1, 4, size=(5, 4)).astype(np.float64)
    ref = np.array([w2_lp(x[:, k], y[:, k]) for k in range(4)])
    np.testing.assert_allclose(_ours(x, y), ref, rtol=1e-5, atol=1e-6)


def test_sorted_w2_is_invariant_to_source_order_and_zero_on_itself(rng):
    x, y = _samples(rng, 6, 4, d=3)
    perm = rng.permutation(6)
    np.testing.assert_array_equal(_ours(x, y), _ours(x[perm], y))
    np.testing.assert_array_equal(_ours(x, x), np.zeros(3))


@pytest.mark.parametrize("n,m", [(5, 3), (7, 4), (3, 8), (4, 4), (12, 5)])
def test_quantile_grid_reproduces_scipy_w1(rng, n, m):
    # The same breakpoint grid with |.| instead of (.)^2 must give scipy's W1.
    x, y = _samples(rng, n, m, d=4)
    i, j, width = quantile_grid(n, m)
    assert torch.all(width > 0)
    assert width.double().sum().item() == pytest.approx(1.0, abs=1e-6)
    xs, ys = np.sort(x, 0), np.sort(y, 0)
    ours = (np.abs(xs[i.numpy()] - ys[j.numpy()]) * width.double().numpy()[:, None]).sum(0)
    ref = np.array([wasserstein_distance(x[:, k], y[:, k]) for k in range(4)])
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_sorted_w2_rejects_empty_sides():
    with pytest.raises(ValueError, match="samples on both sides"):
        sorted_w2(torch.zeros(0, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="samples on both sides"):
        sorted_w2(torch.zeros(4, 3), torch.zeros(0, 3))


# --- gradients ----------------------------------------------------------------------------
def test_sorted_w2_gradient_equal_counts_is_analytic(rng):
    n, d = 9, 5
    x_np, y_np = _samples(rng, n, n, d)
    x = torch.tensor(x_np, dtype=torch.float32, requires_grad=True)
    ys = torch.tensor(y_np, dtype=torch.float32).sort(0).values
    sorted_w2(x, ys).sum().backward()
    # d/dx_k = 2 (x_k - y_(rank of x_k)) / n, dimension by dimension.
    rank = np.argsort(np.argsort(x_np, axis=0), axis=0)
    expected = 2 * (x_np - np.take_along_axis(ys.double().numpy(), rank, axis=0)) / n
    np.testing.assert_allclose(x.grad.double().numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,m", [(5, 3), (3, 8), (6, 4)])
def test_sorted_w2_gradient_unequal_counts_matches_finite_differences_of_lp(rng, n, m):
    d = 2
    # Well-separated source values per dimension so that +-h never changes the source's order.
    x_np = np.stack([rng.permutation(n) * 0.7 + rng.uniform(-0.1, 0.1, n) for _ in range(d)], 1)
    x_np = x_np.astype(np.float32).astype(np.float64)
    y_np = _samples(rng, 1, m, d)[1]
    x = torch.tensor(x_np, dtype=torch.float32, requires_grad=True)
    sorted_w2(x, torch.tensor(y_np, dtype=torch.float32).sort(0).values).sum().backward()
    h = 1e-3
    fd = np.zeros_like(x_np)
    for k in range(n):
        for c in range(d):
            plus, minus = x_np[:, c].copy(), x_np[:, c].copy()
            plus[k] += h
            minus[k] -= h
            fd[k, c] = (w2_lp(plus, y_np[:, c]) - w2_lp(minus, y_np[:, c])) / (2 * h)
    assert np.abs(fd).max() > 1e-2  # a non-trivial gradient
    np.testing.assert_allclose(x.grad.double().numpy(), fd, rtol=1e-4, atol=1e-4)


def test_sorted_w2_gradient_reaches_an_upstream_parameter():
    # The sort sits between a parameter and the loss: autograd must go through it.
    w = torch.tensor([2.0, -1.0], requires_grad=True)
    z = torch.randn(6, 2)
    target = torch.randn(4, 2).sort(0).values
    loss = sorted_w2(z * w, target).sum()
    (g,) = torch.autograd.grad(loss, w)
    h = 1e-2
    for c in range(2):
        e = torch.zeros(2)
        e[c] = h
        with torch.no_grad():
            fd = (sorted_w2(z * (w + e), target).sum() - sorted_w2(z * (w - e), target).sum()) / (2 * h)
        assert g[c].item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-4)


# --- pooling ------------------------------------------------------------------------------
def _loop_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rows = []
    for b in range(x.shape[0]):
        real = [x[b, t].double() for t in range(x.shape[1]) if mask[b, t]]
        rows.append(torch.stack(real).mean(0))
    return torch.stack(rows)


def test_pool_mean_right_padding_ignores_garbage():
    b, t, d = 4, 7, 5
    lengths = [7, 3, 1, 5]
    mask = torch.tensor([[i < n for i in range(t)] for n in lengths])
    x = torch.randn(b, t, d)
    ref = _loop_mean(x, mask)
    for garbage in (1e30, -3e37, 12345.0):
        xg = x.clone()
        xg[~mask] = garbage
        out = pool(xg, mask, "mean")
        assert out.shape == (b, d) and out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)


def test_pool_mean_masked_out_positions_inside_the_sequence():
    # e.g. an excluded BOS at position 0 plus right padding; an integer mask is accepted.
    x = torch.randn(3, 6, 4)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    xg = x.clone()
    xg[~mask.bool()] = 1e30
    torch.testing.assert_close(pool(xg, mask, "mean").double(), _loop_mean(x, mask.bool()), rtol=1e-6, atol=1e-6)


def test_pool_mean_ignores_non_finite_padding():
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]).bool()
    xg = x.clone()
    xg[~mask] = float("inf")
    torch.testing.assert_close(pool(xg, mask, "mean").double(), _loop_mean(x, mask))


def test_pool_token_returns_exactly_the_real_positions():
    x = torch.randn(3, 5, 4, dtype=torch.bfloat16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).bool()
    ref = torch.stack([x[b, t].float() for b in range(3) for t in range(5) if mask[b, t]])
    out = pool(x, mask, "token")
    assert out.dtype == torch.float32
    assert torch.equal(out, ref)


def test_pool_without_mask():
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(pool(x, None, "mean"), x.mean(1))
    assert torch.equal(pool(x, None, "token"), x.reshape(15, 4))


def test_pool_4d_pools_over_space_channel_wise():
    b, c, h, w = 2, 3, 4, 5
    x = torch.randn(b, c, h, w)
    mean_ref = torch.tensor(
        [[x[i, k].double().sum().item() / (h * w) for k in range(c)] for i in range(b)], dtype=torch.float64
    )
    # A (B, T) mask makes no sense for a feature map: it is ignored.
    for mask in (None, torch.zeros(b, 7, dtype=torch.bool)):
        torch.testing.assert_close(pool(x, mask, "mean").double(), mean_ref, rtol=1e-6, atol=1e-6)
    tok_ref = torch.stack([x[i, :, y, z] for i in range(b) for y in range(h) for z in range(w)])
    assert torch.equal(pool(x, None, "token"), tok_ref)


def test_pool_2d_passes_through():
    x = torch.randn(6, 4)
    assert torch.equal(pool(x, None), x)
    assert torch.equal(pool(x, torch.ones(6, 4, dtype=torch.bool), "mean"), x)
    xb = x.to(torch.bfloat16)
    out = pool(xb, None)
    assert out.dtype == torch.float32 and torch.equal(out, xb.float())


def test_pool_rejects_bad_inputs():
    with pytest.raises(ValueError, match="cannot pool"):
        pool(torch.randn(5), None)
    with pytest.raises(ValueError, match="cannot pool"):
        pool(torch.randn(1, 2, 3, 4, 5), None)
    with pytest.raises(ValueError, match="'max'"):
        pool(torch.randn(2, 3, 4), torch.ones(2, 3), "max")


def test_a_prompt_without_real_positions_is_refused():
    from lineas.core.loss import check_mask

    check_mask(torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="no real positions"):
        check_mask(torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool))
