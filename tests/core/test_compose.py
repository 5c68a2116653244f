"""Composed maps equal their parts applied one after the other (stacked hooks), at the parts' strengths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lineas.core.compose import compose_maps
from lineas.core.errors import ConfigError, MapsFileError
from lineas.core.maps import AffineMaps
from tests.helpers import clipped_maps, random_maps

D = 8


def toy_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(D, D), nn.Tanh(), nn.Linear(D, D), nn.Tanh(), nn.Linear(D, D))


def run_stacked(model: nn.Module, x: torch.Tensor, parts: list[AffineMaps], strengths: list[float]) -> torch.Tensor:
    """The reference: every part's hooks attached at its strength, in order (forward hooks run in that order)."""
    if not parts:
        return model(x)
    with parts[0].apply(model, strength=strengths[0]):
        return run_stacked(model, x, parts[1:], strengths[1:])


@pytest.mark.parametrize("strengths", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.3), (0.0, 0.7)])
def test_composed_equals_parts_one_after_the_other(strengths):
    model, x = toy_model(), torch.randn(5, 3, D)
    a = random_maps(["0", "2"], [D, D], scale=0.5)
    b = random_maps(["2", "4"], [D, D], scale=0.5)  # site 2 shared, sites 0 and 4 of one part only
    composed = compose_maps([a, b], list(strengths))
    assert [str(s) for s in composed.sites] == ["0", "2", "4"] and composed.strength == 1.0
    with torch.no_grad(), composed.apply(model):
        got = model(x)
    with torch.no_grad():
        want = run_stacked(model, x, [a, b], list(strengths))
        base = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (want - base).abs().max() > 1e-2  # the maps steer: the comparison is not vacuous


def test_order_matters_and_is_first_then_second():
    model, x = toy_model(), torch.randn(4, D)
    a, b = random_maps(["2"], [D], scale=0.5), random_maps(["2"], [D], scale=0.5)
    with torch.no_grad():
        with compose_maps([a, b], [1.0, 1.0]).apply(model):
            ab = model(x)
        with compose_maps([b, a], [1.0, 1.0]).apply(model):
            ba = model(x)
        torch.testing.assert_close(ab, run_stacked(model, x, [a, b], [1.0, 1.0]))
    assert (ab - ba).abs().max() > 1e-3


def test_coefficients_by_hand():
    a, b = random_maps(["s"], [D], scale=0.5), random_maps(["s"], [D], scale=0.5)
    la, lb = 0.4, 0.9
    wa, ba = 1 + la * (a.omega[0] - 1), la * a.beta[0]
    wb, bb = 1 + lb * (b.omega[0] - 1), lb * b.beta[0]
    composed = compose_maps([a, b], [la, lb])
    torch.testing.assert_close(composed.omega[0].detach(), (wb * wa).detach())
    torch.testing.assert_close(composed.beta[0].detach(), (wb * ba + bb).detach())


def test_three_parts_and_the_composed_slider():
    model, x = toy_model(), torch.randn(4, D)
    parts = [random_maps(["0", "2"], [D, D], scale=0.4) for _ in range(3)]
    composed = compose_maps(parts, [1.0, 0.5, 0.8])
    with torch.no_grad():
        want, base = run_stacked(model, x, parts, [1.0, 0.5, 0.8]), model(x)
        with composed.apply(model):
            torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)
        with composed.apply(model, strength=0.0):  # the composed folder's own slider: 0 is the base model
            torch.testing.assert_close(model(x), base)


def test_refusals():
    a = random_maps(["a"], [D])
    with pytest.raises(ConfigError, match="2 maps but 1 strengths"):
        compose_maps([a, a], [1.0])
    with pytest.raises(MapsFileError, match="site a: maps 1..1 have 8 dims there, maps 2 have 6"):
        compose_maps([a, random_maps(["a"], [6])], [1.0, 1.0])
    with pytest.raises(MapsFileError, match="maps 2 of 2 are clipped"):
        compose_maps([random_maps(["a"], [6]), clipped_maps(6)], [1.0, 1.0])
