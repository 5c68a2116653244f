"""Composed maps folders: live == the parts stacked, the merged checkpoint == live, the record, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import lineas
from lineas.core.maps import load_maps
from lineas.tasks.export import export
from lineas.tasks.gguf import export_gguf
from tests.helpers import random_maps_for, run_cli

PROMPTS = ["Hello there, how are you today?", "Shut up", "The weather is lovely and the sun is out."]
STRENGTHS = [0.7, 1.0]


@pytest.fixture
def two_folders(tiny_llama, tmp_path):
    """Maps A (MLP outputs and attention input norms) and B (MLP outputs and attention outputs), saved."""
    a = random_maps_for(
        tiny_llama, [r"model\.layers\.[01]\.mlp\.down_proj", r"model\.layers\.\d+\.input_layernorm"], scale=0.3
    )
    b = random_maps_for(
        tiny_llama, [r"model\.layers\.[12]\.mlp\.down_proj", r"model\.layers\.\d+\.self_attn\.o_proj"], scale=0.3
    )
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    return tmp_path / "a", tmp_path / "b"


def logits(model, batch, *maps_at):
    """Logits with every ``(maps, strength)`` attached, in order."""
    if not maps_at:
        with torch.no_grad():
            return model(**batch).logits
    (maps, lam), rest = maps_at[0], maps_at[1:]
    with maps.apply(model, strength=lam):
        return logits(model, batch, *rest)


@pytest.mark.slow  # merges, and reads a GGUF back
def test_composed_folder_applies_live_and_merges(tiny_llama, two_folders, tmp_path):
    a_dir, b_dir = two_folders
    lineas.compose(maps=[a_dir, b_dir], strengths=STRENGTHS, output_dir=tmp_path / "ab")
    composed = load_maps(tmp_path / "ab")
    a, b = load_maps(a_dir), load_maps(b_dir)
    model, batch = tiny_llama.model, tiny_llama.collate(PROMPTS)
    stacked = logits(model, batch, (a, STRENGTHS[0]), (b, STRENGTHS[1]))
    live = logits(model, batch, (composed, 1.0))
    torch.testing.assert_close(live, stacked, rtol=1e-4, atol=1e-4)
    assert (stacked - logits(model, batch)).abs().max() > 1e-2  # not vacuous
    assert (stacked - logits(model, batch, (a, 1.0), (b, 1.0))).abs().max() > 1e-3  # the strengths count

    export(tmp_path / "ab", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    with torch.no_grad():
        folded = merged(**batch).logits
    assert (folded - stacked).abs().max() <= 1e-4
    gguf = export_gguf(tmp_path / "ab", tmp_path / "gguf")  # read back by transformers' own GGUF loader
    back = AutoModelForCausalLM.from_pretrained(
        gguf, gguf_file="model.gguf", dtype=torch.float32, mlp_bias=True, attention_bias=True
    )
    with torch.no_grad():
        assert (back(**batch).logits - stacked).abs().max() <= 1e-4

    meta = json.loads((tmp_path / "ab" / "lineas.json").read_text())
    assert meta["strength"] == 1.0 and meta["estimator"] == "composed" and meta["base_model"] == "tiny:llama"
    parts = meta["composed_of"]
    assert [p["path"] for p in parts] == [str(a_dir.resolve()), str(b_dir.resolve())]
    assert [p["strength"] for p in parts] == STRENGTHS and parts[0]["info"]["base_model"] == "tiny:llama"


def test_refuses_other_bases_gates_and_an_existing_output(tiny_llama, two_folders, tmp_path):
    a_dir, b_dir = two_folders
    other = random_maps_for(lineas.CausalLM("tiny:gpt2"), "mlp_out", scale=0.3)
    other.save(tmp_path / "gpt2")
    with pytest.raises(lineas.MapsFileError, match="fitted on different base models .*tiny:gpt2"):
        lineas.compose(maps=[a_dir, tmp_path / "gpt2"], output_dir=tmp_path / "out")
    (b_dir / "gate.json").write_text("{}")
    with pytest.raises(lineas.MapsFileError, match="holds a gate \\(gate.json\\)"):
        lineas.compose(maps=[a_dir, b_dir], output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileExistsError, match="overwrite=true"):
        lineas.compose(maps=[a_dir, a_dir], output_dir=b_dir)


@pytest.mark.slow
def test_compose_cli(two_folders, tmp_path):
    a_dir, b_dir = two_folders
    out = tmp_path / "ab"
    proc = run_cli("lineas.compose", f"maps=[{a_dir},{b_dir}]", "strengths=[0.5,1]", f"output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "lineas.json").read_text())["composed_of"][0]["strength"] == 0.5
    proc = run_cli("lineas.compose", f"maps=[{a_dir}]", "strengths=[0.5,1]", f"output_dir={tmp_path / 'x'}")
    assert proc.returncode == 2 and "lineas.compose: 1 maps but 2 strengths" in proc.stderr, proc.stderr[-2000:]
