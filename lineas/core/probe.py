"""The probe of a gate (DSAS): principal directions of pooled activations and an L2 logistic regression on
their projections, fitted in float64 by Newton's method (deterministic), scored by held-out balanced accuracy."""

from __future__ import annotations

import torch


def principal_directions(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean (D,), components (k, D), scale (k,))`` of samples ``x`` ``(N, D)``, in float64.

    The components are the top-k right singular vectors of the centred samples, each signed so that its
    largest entry is positive (deterministic); ``scale`` is the standard deviation of the projections.
    """
    x = x.double()
    mean = x.mean(0)
    _, sv, vt = torch.linalg.svd(x - mean, full_matrices=False)
    k = min(k, vt.shape[0])
    comps = vt[:k]
    sign = comps.gather(1, comps.abs().argmax(1, keepdim=True)).sign()
    scale = (sv[:k] / x.shape[0] ** 0.5).clamp_min(1e-12)
    return mean, comps * sign, scale


def logistic_fit(
    x: torch.Tensor, y: torch.Tensor, l2: float = 1.0, iters: int = 100, tol: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight (k,), bias ())`` minimising ``sum_i logloss(x_i . w + b, y_i) + l2/2 * |w|^2`` (Newton, float64).

    The intercept is not penalised: scikit-learn's ``LogisticRegression(C=1/l2)``. Deterministic.
    """
    x, y = x.double(), y.double()
    n, k = x.shape
    xb = torch.cat([x, x.new_ones(n, 1)], 1)
    penalty = torch.cat([x.new_full((k,), float(l2)), x.new_zeros(1)])
    w = x.new_zeros(k + 1)
    for _ in range(iters):
        p = torch.sigmoid(xb @ w)
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb.T * (p * (1 - p))) @ xb + torch.diag(penalty)
        step = torch.linalg.solve(hess + 1e-12 * torch.eye(k + 1, dtype=x.dtype), grad)
        w = w - step
        if step.abs().max() < tol:
            break
    return w[:k], w[k]


def balanced_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over the two classes of the share of samples on their side of 0."""
    pred = logits > 0
    y = y.bool()
    return 0.5 * (float(pred[y].double().mean()) + float((~pred[~y]).double().mean()))


def fit_probe(
    source: torch.Tensor,
    control: torch.Tensor,
    source_heldout: torch.Tensor,
    control_heldout: torch.Tensor,
    k: int = 5,
    l2: float = 1.0,
) -> tuple[tuple[torch.Tensor, ...], float]:
    """``((mean, components, scale, weight, bias), heldout balanced accuracy)`` of a probe of source (1) against
    control (0), each ``(N, D)``: top-``k`` principal directions of both fit sets pooled, standardised projections,
    logistic regression with penalty ``l2`` (see :func:`logistic_fit`)."""
    x = torch.cat([source, control]).double()
    y = torch.cat([source.new_ones(len(source)), control.new_zeros(len(control))]).double()
    mean, comps, scale = principal_directions(x, k)
    weight, bias = logistic_fit((x - mean) @ comps.T / scale, y, l2)
    held = torch.cat([source_heldout, control_heldout]).double()
    held_y = torch.cat([source_heldout.new_ones(len(source_heldout)), control_heldout.new_zeros(len(control_heldout))])
    accuracy = balanced_accuracy((held - mean) @ comps.T / scale @ weight + bias, held_y)
    return (mean, comps, scale, weight, bias), accuracy
