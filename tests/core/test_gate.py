"""The per-token gate: exact per-token strength through the hooks, gate 1 / gate 0 limits, save / load, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lineas import AffineMaps, MapsFileError, MergeError, load_maps
from lineas.core.errors import ConfigError
from lineas.core.gate import Gate, fit_gate
from lineas.core.merge import check_unclipped
from tests.helpers import random_maps

D, K = 6, 3


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, D), nn.Tanh(), nn.Linear(D, D), nn.Linear(D, 3)).eval()


def _gated(lam: float = 0.7, clip: bool = False) -> AffineMaps:
    """Random maps on sites "0" and "2" with a random probe on each."""
    maps = random_maps(["0", "2"], [D, D])
    maps.strength = lam
    if clip:
        maps.clip_(0, torch.full((D,), -0.5), torch.full((D,), 0.6))
    maps.gate = Gate(maps.sites, maps.dims, K)
    for i in range(2):  # directions, scales and weights that spread the gate over (0, 1)
        directions = torch.linalg.qr(torch.randn(D, K)).Q.T
        maps.gate.set_probe(
            i, 0.1 * torch.randn(D), directions, 0.2 + 0.3 * torch.rand(K), 3 * torch.randn(K), torch.zeros(1)
        )
    return maps


def _hand_gate(gate: Gate, i: int, z: torch.Tensor) -> torch.Tensor:
    """``sigmoid(a . ((z - mu) P^T / s) + c)`` written out, one token at a time."""
    mu, p, s, a, c = (
        t.detach() for t in (gate.mean[i], gate.components[i], gate.scale[i], gate.weight[i], gate.bias[i])
    )
    return torch.stack([torch.sigmoid(((tok - mu) @ p.T / s) @ a + c) for tok in z.reshape(-1, D)]).reshape(
        *z.shape[:-1], 1
    )


def _hand_steer(maps: AffineMaps, i: int, z: torch.Tensor, clip: bool) -> torch.Tensor:
    lam, omega, beta = maps.strength, maps.omega[i].detach(), maps.beta[i].detach()
    mapped = omega * z + beta
    if clip and maps.bounds[i] is not None:
        lo, hi = maps.bounds[i]
        mapped = torch.where((lo < z) & (z < hi), mapped, z)
    return z + lam * _hand_gate(maps.gate, i, z) * (mapped - z)


@pytest.mark.parametrize("clip", [False, True])
def test_hooks_apply_the_per_token_strength_exactly(clip):
    net, maps = _net(), _gated(clip=clip)
    x = torch.randn(2, 5, 4)  # 2 prompts x 5 tokens
    with torch.no_grad():
        z0 = _hand_steer(maps, 0, net[0](x), clip)
        z2 = _hand_steer(maps, 1, net[2](net[1](z0)), clip)
        expected = net[3](z2)
        with maps.apply(net):
            got = net(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    gates = _hand_gate(maps.gate, 0, net[0](x)).squeeze(-1)
    assert gates.std() > 0.05  # the tokens really get different strengths


def test_gate_one_is_the_ungated_maps_and_gate_zero_the_base_model():
    net, maps = _net(), _gated()
    x = torch.randn(3, 4, 4)
    with torch.no_grad():
        base = net(x)
        ungated = AffineMaps(maps.sites, maps.dims, strength=maps.strength)
        ungated.load_state_dict({k: v for k, v in maps.state_dict().items() if not k.startswith("gate.")})
        with ungated.apply(net):
            steered = net(x)
        assert not torch.allclose(steered, base, atol=1e-3)
        for bias, expected in ((1e4, steered), (-1e4, base)):  # sigmoid saturates: gate exactly 1 / 0
            for b in maps.gate.bias:
                b.fill_(bias)
            with maps.apply(net):
                torch.testing.assert_close(net(x), expected, rtol=1e-6, atol=1e-6)
        for state, expected in (("steer", steered), ("off", base)):
            maps.gate.states = [state, state]
            with maps.apply(net):
                torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-7 if state == "off" else 0)


def test_gate_on_a_feature_map_is_per_pixel():
    maps = _gated()
    maps.gate.states[1] = "off"
    t = torch.randn(2, D, 3, 3)
    out = maps.transform(0, t)
    w, b = (c.view(1, D, 1, 1) for c in maps.coefficients(0))
    g = _hand_gate(maps.gate, 0, t.movedim(1, -1)).movedim(-1, 1)
    torch.testing.assert_close(out, t + g * ((w - 1) * t + b), rtol=1e-5, atol=1e-6)
    assert torch.equal(maps.transform(1, t), t)


def test_fit_gate_gates_only_separable_sites():
    source = [torch.randn(40, D) + 5 * torch.eye(D)[0], torch.randn(40, D)]  # site 1 cannot tell them apart
    control = [torch.randn(40, D), torch.randn(40, D)]
    for weak in ("steer", "off"):
        gate = fit_gate(
            ["a", "b"],
            [s[:20] for s in source],
            [c[:20] for c in control],
            [s[20:] for s in source],
            [c[20:] for c in control],
            k=K,
            weak=weak,
        )
        assert gate.states == ["gated", weak] and gate.accuracy[0] > 0.9 and gate.accuracy[1] < 0.75
        assert gate.info["threshold"] == 0.75
    with pytest.raises(ConfigError, match="weak_sites='maybe'"):
        fit_gate(["a"], source[:1], control[:1], source[:1], control[:1], weak="maybe")


def test_save_load_round_trip(tmp_path):
    maps = _gated()
    maps.gate.states[1] = "off"
    maps.gate.accuracy = [0.9, 0.6]
    maps.save(tmp_path / "m")
    back = load_maps(tmp_path / "m")
    assert back.gated and back.gate.states == ["gated", "off"] and back.gate.accuracy == [0.9, 0.6]
    for name in ("mean", "components", "scale", "weight", "bias"):
        assert torch.equal(getattr(back.gate, name)[0], getattr(maps.gate, name)[0])
    assert set(load_file(tmp_path / "m" / "gate.safetensors")) == {
        f"0.{n}" for n in ("mean", "components", "scale", "weight", "bias")
    }
    z = torch.randn(2, 3, D)
    torch.testing.assert_close(back.transform(0, z), maps.transform(0, z), rtol=0, atol=0)
    assert not load_maps(tmp_path / "m", gate=False).gated


def _corrupt(folder, what: str) -> None:
    meta = json.loads((folder / "gate.json").read_text())
    tensors = load_file(folder / "gate.safetensors")
    if what == "json":
        (folder / "gate.json").write_text("{not json")
    elif what == "format":
        (folder / "gate.json").write_text(json.dumps({**meta, "format": "other/9"}))
    elif what == "sites":
        meta["sites"][0]["site"] = "elsewhere"
        (folder / "gate.json").write_text(json.dumps(meta))
    elif what == "state":
        meta["sites"][0]["state"] = "sometimes"
        (folder / "gate.json").write_text(json.dumps(meta))
    elif what == "missing tensor":
        save_file({k: v for k, v in tensors.items() if k != "0.weight"}, folder / "gate.safetensors")
    elif what == "shape":
        save_file({**tensors, "0.weight": torch.zeros(K + 1)}, folder / "gate.safetensors")
    elif what == "nan":
        save_file({**tensors, "0.bias": torch.tensor([float("nan")])}, folder / "gate.safetensors")
    elif what == "one file":
        (folder / "gate.safetensors").unlink()
    elif what == "truncated":
        (folder / "gate.safetensors").write_bytes(b"\x00" * 5)


@pytest.mark.parametrize(
    "what, message",
    [
        ("json", "not valid JSON"),
        ("format", "format 'other/9'"),
        ("sites", "not the maps' sites"),
        ("state", "no state among"),
        ("missing tensor", r"lacks \['weight'\]"),
        ("shape", r"probe tensor of shape \(4,\), expected \(3,\)"),
        ("nan", "non-finite"),
        ("one file", "gate.safetensors is missing"),
        ("truncated", "not a readable safetensors file"),
    ],
)
def test_a_broken_gate_is_one_clear_error(tmp_path, what, message):
    _gated().save(tmp_path / "m")
    _corrupt(tmp_path / "m", what)
    with pytest.raises(MapsFileError, match=message) as err:
        load_maps(tmp_path / "m")
    assert "\n" not in str(err.value)


def test_a_gated_map_does_not_merge():
    with pytest.raises(MergeError, match="depends on the input.*ungated=true") as err:
        check_unclipped(_gated())
    assert "\n" not in str(err.value)


def test_recording_sees_every_gate_value():
    maps = _gated()
    maps.gate.states[1] = "steer"
    net, x = _net(), torch.randn(2, 5, 4)
    with torch.no_grad():
        z0 = net[0](x)
        with maps.gate.recording() as record, maps.apply(net):
            net(x)
    torch.testing.assert_close(record[0][0], _hand_gate(maps.gate, 0, z0), rtol=1e-5, atol=1e-6)
    assert torch.equal(record[1][0], torch.ones(2, 5, 1))
    assert maps.gate._record is None
