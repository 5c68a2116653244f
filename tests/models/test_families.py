"""The family tables: site presets per model_type, and what an unknown family or preset gets."""

from __future__ import annotations

import re

import pytest
from torch import nn

import lineas
from lineas import Site, SiteError, resolve_sites
from lineas.models.families import preset

MLP_OUT = [Site(f"model.layers.{i}.mlp.down_proj") for i in range(4)]


def test_resolve_mlp_out_preset_on_tiny_llama(tiny_llama):
    model = tiny_llama.model
    assert resolve_sites(model, "mlp_out") == MLP_OUT
    assert resolve_sites(model, "default") == MLP_OUT
    assert resolve_sites(model, [r"model\.layers\.\d+\.mlp\.down_proj"]) == MLP_OUT
    assert [s.module for s in resolve_sites(model, "attn_in")] == [
        f"model.layers.{i}.input_layernorm" for i in range(4)
    ]


class _FakeConfig:
    model_type = "bert"


class _NoPresetModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = _FakeConfig()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))


def test_unknown_preset_for_model_type_without_presets_raises():
    model = _NoPresetModel()
    with pytest.raises(SiteError, match=re.escape("no site presets for model_type 'bert'")):
        resolve_sites(model, "default")
    with pytest.raises(SiteError, match="no site presets"):
        preset("bert", "mlp_out")
    # A preset name of another family is not a preset here: it must still fail loudly.
    with pytest.raises(SiteError, match="mlp_out"):
        resolve_sites(model, "mlp_out")
    # Plain patterns still work on such a model.
    assert resolve_sites(model, [r"encoder\.\d"]) == [Site("encoder.0"), Site("encoder.1")]


def test_unknown_preset_name_for_a_known_family_raises():
    with pytest.raises(SiteError, match="choose one of"):
        preset("qwen2", "mlp_out")
    assert preset("llama") == lineas.PRESETS["llama"]["mlp_out"]
    assert preset("qwen2") == lineas.PRESETS["qwen2"]["attn_in"]


def test_a_word_that_is_no_preset_lists_the_presets(tiny_llama):
    with pytest.raises(SiteError, match=r"'mlp_outt' is neither a preset of llama \(presets: \['attn_in', 'attn_out'"):
        resolve_sites(tiny_llama.model, "mlp_outt")
