"""The gate's probe against scikit-learn: PCA directions and scales, L2 logistic regression, balanced accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from lineas.core.probe import balanced_accuracy, fit_probe, logistic_fit, principal_directions


def _two_clouds(rng: np.random.Generator, n: int, d: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    direction = rng.normal(size=d)
    source = rng.normal(size=(n, d)) + shift * direction / np.linalg.norm(direction)
    return source, rng.normal(size=(n, d))


@pytest.mark.parametrize("l2", [0.1, 1.0, 10.0])
def test_logistic_fit_matches_sklearn(rng, l2):
    x = rng.normal(size=(80, 5))
    y = (x @ rng.normal(size=5) + 0.5 * rng.normal(size=80) > 0.3).astype(float)
    weight, bias = logistic_fit(torch.from_numpy(x), torch.from_numpy(y), l2=l2)
    ref = LogisticRegression(C=1 / l2, tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(weight.numpy(), ref.coef_[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(bias), ref.intercept_[0], rtol=1e-5, atol=1e-7)


def test_logistic_fit_is_deterministic_on_separable_data(rng):
    source, control = _two_clouds(rng, 30, 4, shift=20.0)  # perfectly separable: only the penalty bounds w
    x = torch.from_numpy(np.concatenate([source, control]))
    y = torch.cat([torch.ones(30), torch.zeros(30)])
    first, again = logistic_fit(x, y), logistic_fit(x, y)
    assert torch.isfinite(first[0]).all() and torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(first[0].numpy(), ref.coef_[0], rtol=1e-4)


def test_principal_directions_match_sklearn_pca(rng):
    x = rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8)) + rng.normal(size=8)
    mean, comps, scale = principal_directions(torch.from_numpy(x), 3)
    ref = PCA(n_components=3).fit(x)
    np.testing.assert_allclose(mean.numpy(), ref.mean_, rtol=1e-10)
    signs = np.sign((comps.numpy() * ref.components_).sum(1))  # a direction is defined up to its sign
    np.testing.assert_allclose(comps.numpy(), ref.components_ * signs[:, None], atol=1e-8)
    # sklearn's variance divides by n - 1; the probe standardises with the population deviation
    np.testing.assert_allclose(scale.numpy() ** 2, ref.explained_variance_ * (len(x) - 1) / len(x), rtol=1e-8)
    top = comps.abs().argmax(1)
    assert (comps[torch.arange(3), top] > 0).all()  # the sign rule: largest entry positive


def test_balanced_accuracy_matches_sklearn(rng):
    logits = torch.from_numpy(rng.normal(size=50))
    y = torch.from_numpy((rng.random(50) < 0.3).astype(float))
    assert balanced_accuracy(logits, y) == pytest.approx(balanced_accuracy_score(y.numpy(), logits.numpy() > 0))


def test_fit_probe_scores_held_out_prompts(rng):
    source, control = _two_clouds(rng, 80, 16, shift=6.0)
    s, c = torch.from_numpy(source), torch.from_numpy(control)
    probe, accuracy = fit_probe(s[:40], c[:40], s[40:], c[40:], k=5)
    assert accuracy > 0.9
    mean, comps, scale, weight, bias = probe
    # the same pipeline in scikit-learn: PCA (population-standardised scores), then the logistic regression
    x = np.concatenate([source[:40], control[:40]])
    pca = PCA(n_components=5).fit(x)
    signs = np.sign((comps.numpy() * pca.components_).sum(1))
    scores = pca.transform(x) * signs / scale.numpy()
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(scores, np.r_[np.ones(40), np.zeros(40)])
    np.testing.assert_allclose(weight.numpy(), ref.coef_[0], rtol=1e-5, atol=1e-7)
    _, chance = fit_probe(c[:20], c[20:40], c[40:60], c[60:], k=5)  # two draws of one cloud: near chance
    assert chance < 0.75
