"""AffineMaps: construction, strength semantics, save/load, clipped maps, and steering the tiny Llama."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lineas
from lineas import AffineMaps, MapsFileError, Site, load_maps, resolve_sites
from tests.helpers import clipped_maps, random_maps


def _logits(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


# --- construction, strength -----------------------------------------------------------------
def test_init_is_identity_in_float32():
    maps = AffineMaps(["a", Site("b", 1)], [3, 5])
    assert maps.sites == [Site("a"), Site("b", 1)]
    assert maps.dims == [3, 5] and maps.strength == 1.0
    for w, b in zip(maps.omega, maps.beta):
        assert w.dtype == b.dtype == torch.float32
        assert torch.equal(w.detach(), torch.ones_like(w)) and torch.equal(b.detach(), torch.zeros_like(b))
    with pytest.raises(ValueError, match="2 sites but 1 dims"):
        AffineMaps(["a", "b"], [3])


def test_info_cannot_shadow_the_file_metadata():
    with pytest.raises(ValueError, match="reserved"):
        AffineMaps(["a"], [2], info={"format": "mine"})


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 1.0])
def test_coefficients_follow_strength(lam):
    maps = random_maps(["a", "b"], [4, 6])
    maps.strength = lam
    for i, (w, b) in enumerate(zip(maps.omega, maps.beta)):
        cw, cb = maps.coefficients(i)
        torch.testing.assert_close(cw, 1 + lam * (w - 1))
        torch.testing.assert_close(cb, lam * b)
        # an explicit strength overrides the maps' own
        cw2, cb2 = maps.coefficients(i, strength=0.1)
        torch.testing.assert_close(cw2, 1 + 0.1 * (w - 1))
        torch.testing.assert_close(cb2, 0.1 * b)
    # T_lam(z) = z + lam*(T(z) - z)
    z = torch.randn(2, 3, 4)
    w, b = maps.omega[0].detach(), maps.beta[0].detach()
    torch.testing.assert_close(maps.transform(0, z), z + lam * ((w * z + b) - z))


@pytest.mark.parametrize("lam", [-0.1, 1.5, 2.0])
def test_strength_outside_unit_interval_warns(lam):
    maps = AffineMaps(["a"], [2])
    with pytest.warns(UserWarning, match="outside"):
        maps.strength = lam
    assert maps.strength == lam
    with pytest.warns(UserWarning, match="outside"):
        AffineMaps(["a"], [2], strength=lam)
    model = nn.Sequential()
    model.add_module("a", nn.Identity())
    maps.strength = 1.0
    with pytest.warns(UserWarning, match="outside"):
        with maps.apply(model, strength=lam):
            assert maps.strength == lam
    assert maps.strength == 1.0  # restored


def test_strength_inside_unit_interval_does_not_warn(recwarn):
    maps = AffineMaps(["a"], [2])
    for lam in (0.0, 0.3, 1.0):
        maps.strength = lam
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


# --- save / load ------------------------------------------------------------------------------
def test_save_load_round_trip_is_exact(tmp_path):
    sites = ["model.layers.0.mlp.down_proj", "blocks.3:1", "unet.mid.norm"]
    info = {
        "base_model": "tiny:llama",
        "pooling": "mean",
        "steps": 12,
        "sparsity": {"l1": 0.1, "group": 0.0, "beta_scale": 1.0, "eps": 1e-4},
        "nested": {"list": [1, 2.5, "x"], "none": None},
    }
    maps = random_maps(AffineMaps(sites, [7, 3, 11], strength=0.35, info=info), scale=1.0)
    out = maps.save(tmp_path / "maps")
    assert out == tmp_path / "maps"
    assert sorted(p.name for p in out.iterdir()) == ["lineas.json", "maps.safetensors"]
    meta = json.loads((out / "lineas.json").read_text())
    assert meta["support"] == maps.support(1e-4)  # saved with the sparsity eps
    assert meta["sites"] == [{"site": s, "dim": d} for s, d in zip(sites, [7, 3, 11])]

    for loaded in (AffineMaps.load(out), load_maps(out), lineas.load_maps(str(out))):
        assert loaded.sites == [Site.parse(s) for s in sites]
        assert loaded.dims == [7, 3, 11]
        assert loaded.strength == 0.35
        assert loaded.info == info
        for a, b in zip(list(maps.omega) + list(maps.beta), list(loaded.omega) + list(loaded.beta)):
            assert a.dtype == b.dtype == torch.float32
            assert torch.equal(a.detach(), b.detach())  # bitwise
            assert b.requires_grad


def test_save_overwrites_and_refuses_when_asked(tmp_path):
    a = random_maps(["x"], [3])
    b = random_maps(["x"], [3])
    a.save(tmp_path / "m")
    b.save(tmp_path / "m")
    assert torch.equal(load_maps(tmp_path / "m").omega[0].detach(), b.omega[0].detach())
    with pytest.raises(FileExistsError):
        a.save(tmp_path / "m", overwrite=False)
    assert torch.equal(load_maps(tmp_path / "m").omega[0].detach(), b.omega[0].detach())


@pytest.mark.parametrize("name", ["maps.safetensors", "lineas.json"])
def test_load_missing_file_names_it(tmp_path, name):
    AffineMaps(["x"], [3]).save(tmp_path / "m")
    (tmp_path / "m" / name).unlink()
    with pytest.raises(MapsFileError, match=name.replace(".", r"\.")):
        load_maps(tmp_path / "m")


def test_load_wrong_shape_or_missing_tensor_names_the_file(tmp_path):
    folder = tmp_path / "m"
    AffineMaps(["x", "y:0"], [3, 4]).save(folder)
    tensors = load_file(folder / "maps.safetensors")

    bad = dict(tensors, **{"y:0.beta": torch.zeros(5)})
    save_file(bad, folder / "maps.safetensors")
    with pytest.raises(MapsFileError) as err:
        load_maps(folder)
    msg = str(err.value)
    assert "maps.safetensors" in msg and "y:0.beta" in msg and "(5,)" in msg and "(4,)" in msg

    bad = dict(tensors, **{"x.omega": torch.ones(3, 1)})
    save_file(bad, folder / "maps.safetensors")
    with pytest.raises(MapsFileError, match=r"maps\.safetensors.*x\.omega"):
        load_maps(folder)

    missing = {k: v for k, v in tensors.items() if k != "x.beta"}
    save_file(missing, folder / "maps.safetensors")
    with pytest.raises(MapsFileError, match=r"maps\.safetensors.*x\.beta is missing"):
        load_maps(folder)


def test_load_bad_json_or_format(tmp_path):
    folder = tmp_path / "m"
    AffineMaps(["x"], [3]).save(folder)
    meta = json.loads((folder / "lineas.json").read_text())
    (folder / "lineas.json").write_text("{not json")
    with pytest.raises(MapsFileError, match=r"lineas\.json.*not valid JSON"):
        load_maps(folder)
    (folder / "lineas.json").write_text(json.dumps(dict(meta, format="other/9")))
    with pytest.raises(MapsFileError, match="other/9"):
        load_maps(folder)


def test_load_refuses_non_finite_maps_naming_the_site(tmp_path):
    maps = AffineMaps(["model.layers.0.mlp"], [4])
    maps.save(tmp_path / "m")
    tensors = load_file(tmp_path / "m" / "maps.safetensors")
    tensors["model.layers.0.mlp.beta"][2] = float("nan")
    save_file(tensors, tmp_path / "m" / "maps.safetensors")
    with pytest.raises(MapsFileError, match=r"maps.safetensors: model.layers.0.mlp.beta holds non-finite"):
        load_maps(tmp_path / "m")


# --- on the tiny Llama ------------------------------------------------------------------------
SITES = [
    r"model\.layers\.\d+\.mlp\.down_proj",
    r"model\.layers\.[13]\.input_layernorm",
    r"model\.layers\.2\.self_attn\.o_proj",
]


def test_strength_zero_is_the_base_model_on_tiny_llama(tiny_llama, source_batch, no_hooks_left):
    model = tiny_llama.model
    no_hooks_left(model)
    sites = resolve_sites(model, SITES)
    maps = random_maps(sites, [64] * len(sites), scale=0.5)
    base = _logits(model, source_batch)
    with maps.apply(model, strength=0.0) as steered:
        assert steered is model
        assert maps.strength == 0.0
        at_zero = _logits(model, source_batch)
    assert torch.equal(at_zero, base)
    assert maps.strength == 1.0
    with maps.apply(model):
        at_one = _logits(model, source_batch)
    assert (at_one - base).abs().max() > 1e-2  # the maps do act at strength 1
    with maps.apply(model, strength=0.5):
        at_half = _logits(model, source_batch)
    assert not torch.equal(at_half, at_one) and not torch.equal(at_half, base)
    assert torch.equal(_logits(model, source_batch), base)  # hooks removed


# --- clipped maps -----------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_clipped_map_changes_only_values_strictly_inside_the_bounds(lam):
    maps = clipped_maps()
    z = torch.randn(3, 7, 6) * 2
    z[0, 0, :2] = torch.tensor([-0.5, 0.8])  # exactly on the bounds: left alone (strict inequalities)
    maps.strength = lam
    out = maps.transform(0, z)
    w, b = (1 + lam * (maps.omega[0] - 1)).detach(), (lam * maps.beta[0]).detach()
    inside = (z > -0.5) & (z < 0.8)
    assert 0 < inside.float().mean() < 1
    torch.testing.assert_close(out[inside], (z * w + b)[inside])
    assert torch.equal(out[~inside], z[~inside])


def test_clipped_map_on_a_feature_map_shifts_every_pixel_by_the_mapped_channel_mean():
    # The official rule for 4-D outputs: decide on each channel's spatial mean m, add T(m) - m everywhere.
    maps = clipped_maps(4)
    z = torch.randn(2, 4, 3, 5) + torch.tensor([0.0, 3.0, 0.2, -2.0]).view(1, 4, 1, 1)
    out = maps.transform(0, z)
    m = z.mean((2, 3), keepdim=True)
    w, b = (t.detach().view(1, 4, 1, 1) for t in (maps.omega[0], maps.beta[0]))
    inside = (m > -0.5) & (m < 0.8)
    expected = torch.where(inside, z + (w * m + b - m), z)
    assert inside.any() and not inside.all()
    torch.testing.assert_close(out, expected)


def test_bounds_round_trip(tmp_path):
    maps = clipped_maps()
    maps.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "lineas.json").read_text())["clipped"] is True
    back = load_maps(tmp_path / "m")
    assert back.clipped and all(torch.equal(a, b) for a, b in zip(back.bounds[0], maps.bounds[0]))


def test_maps_of_another_width_are_refused_when_applied_naming_the_site():
    net = nn.Sequential(nn.Linear(3, 5))
    maps = AffineMaps(["0"], [4])
    with pytest.raises(MapsFileError, match=r"site 0: the maps have 4 dims but the module outputs 5"):
        with maps.apply(net):
            net(torch.randn(2, 3))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: [m], "a JSON object is expected, not list"),
        (lambda m: {k: v for k, v in m.items() if k != "sites"}, "'sites' must be a non-empty list"),
        (lambda m: dict(m, sites=[{"site": "x"}]), r"sites\[0\].*a whole dim >= 1"),
        (lambda m: dict(m, sites=[{"site": "x", "dim": "3"}]), r"sites\[0\]"),
        (lambda m: dict(m, strength="high"), "strength 'high' is not a finite number"),
        (lambda m: dict(m, strength=None), "strength None is not a finite number"),
        (lambda m: dict(m, sites=m["sites"] + m["sites"][:1]), "site x is listed twice"),
        (lambda m: dict(m, sites=m["sites"][:1]), r"holds tensors of sites \['y'\] that lineas.json does not list"),
    ],
)
def test_load_refuses_a_malformed_lineas_json_in_one_line(tmp_path, edit, match):
    folder = tmp_path / "m"
    AffineMaps(["x", "y"], [3, 4]).save(folder)
    meta = json.loads((folder / "lineas.json").read_text())
    (folder / "lineas.json").write_text(json.dumps(edit(meta)))
    with pytest.raises(MapsFileError, match=match):
        load_maps(folder)
