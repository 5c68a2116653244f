"""Closed-form baselines: Linear-AcT against brute-force least squares; mean shift; incremental fitting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lineas
from lineas.config import data_path
from lineas.datamodules import PromptPairDataModule
from lineas.estimators import linear_act_, mean_shift_, sorted_affine_fit


@pytest.mark.parametrize("n,m", [(8, 8), (6, 4), (3, 7)])
def test_sorted_affine_fit_is_least_squares_on_sorted_samples(rng, n, m):
    x = rng.normal(size=(n, 5)) * 2 + 1
    y = rng.normal(size=(m, 5)) * 0.5 - 3
    omega, beta = sorted_affine_fit(torch.tensor(x), torch.tensor(y))
    # Brute force: replicate each sample so both sides have lcm(n, m) samples, then ordinary lstsq.
    k = math.lcm(n, m)
    xs, ys = np.sort(np.repeat(x, k // n, axis=0), 0), np.sort(np.repeat(y, k // m, axis=0), 0)
    for d in range(5):
        (a, b), *_ = np.linalg.lstsq(np.stack([xs[:, d], np.ones(k)], 1), ys[:, d], rcond=None)
        assert omega[d].item() == pytest.approx(a, rel=1e-4, abs=1e-5)
        assert beta[d].item() == pytest.approx(b, rel=1e-4, abs=1e-4)


def test_constant_dimension_keeps_identity_scale():
    x = torch.zeros(4, 2)
    x[:, 1] = torch.arange(4.0)
    omega, beta = sorted_affine_fit(x, torch.arange(8.0).reshape(4, 2))
    assert omega[0].item() == 1.0 and torch.isfinite(beta).all()


@pytest.fixture
def module_and_data(tiny_llama):
    dm = PromptPairDataModule(data_path("toxicity/toxic.txt"), data_path("tiny/polite.txt"),
                              collate_fn=tiny_llama.collate, num_fit=16)
    return lineas.LinEASModule(tiny_llama, sites="mlp_out"), dm


def test_mean_shift_matches_the_mean_difference(module_and_data):
    module, dm = module_and_data
    mean_shift_(module, dm)
    src = module.collect(dm.source_dataloader("fit"), with_maps=False)
    tgt = module.collect(dm.target_dataloader("fit"), with_maps=False)
    for k in range(4):
        assert torch.equal(module.maps.omega[k].detach(), torch.ones(64))
        torch.testing.assert_close(module.maps.beta[k].detach(), tgt[k].mean(0) - src[k].mean(0))


def test_linear_act_is_incremental(module_and_data):
    module, dm = module_and_data
    linear_act_(module, dm)
    # Site k's map was fitted on outputs produced with the maps of sites < k applied (on both sides).
    # So the source with maps <= k against the target with maps < k re-fits to the identity.
    src = module.collect(dm.source_dataloader("fit"), with_maps=True)
    for k in range(4):
        saved = module.maps.omega[k].detach().clone(), module.maps.beta[k].detach().clone()
        with torch.no_grad():
            module.maps.omega[k].fill_(1.0)
            module.maps.beta[k].zero_()
            tgt = module.collect(dm.target_dataloader("fit"), with_maps=True)[k]
            module.maps.omega[k].copy_(saved[0])
            module.maps.beta[k].copy_(saved[1])
        positive = saved[0] > 0  # a negative scale reverses the sort order
        assert positive.float().mean() > 0.5
        omega, beta = sorted_affine_fit(src[k], tgt)
        torch.testing.assert_close(omega[positive], torch.ones(int(positive.sum())), atol=2e-3, rtol=0)
        torch.testing.assert_close(beta[positive], torch.zeros(int(positive.sum())), atol=2e-3, rtol=0)
    # A non-incremental estimate (all sites from the unmapped model) differs beyond layer 0.
    plain = module.collect(dm.source_dataloader("fit"), with_maps=False)
    assert not torch.allclose(plain[3], src[3], atol=1e-3)
