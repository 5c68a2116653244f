"""Post hoc gate on the tiny Llama: probes on the base model, the mean gate, the gate command, export refusals."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lineas import MergeError, load_maps
from lineas.cli.gate import run_gate
from lineas.core.errors import ConfigError
from lineas.core.files import data_path
from lineas.core.gate import Gate
from lineas.core.loss import pool
from lineas.datamodules import split_prompts
from lineas.tasks.configs import GateConfig
from lineas.tasks.export import export
from lineas.tasks.gate import fit_posthoc, mean_gate, site_samples, token_gates
from tests.helpers import random_maps_for, run_cli

SOURCE, CONTROL = data_path("toxicity/toxic.txt"), data_path("tiny/polite.txt")  # a random model sees the style


def _prompts() -> dict:
    return {side: split_prompts(path, 32, side=side) for side, path in (("source", SOURCE), ("control", CONTROL))}


def test_site_samples_are_the_pooled_base_outputs(tiny_llama):
    maps = random_maps_for(tiny_llama, "mlp_out")
    texts = ["a short one", "a somewhat longer sentence than the first", "three"]
    got = site_samples(tiny_llama, maps.sites, texts, batch_size=2)  # two batches, padded differently
    modules = dict(tiny_llama.model.named_modules())
    for t, text in enumerate(texts):  # one prompt at a time, no padding, plain forward hooks
        batch = tiny_llama.collate([text])
        captured: dict[int, torch.Tensor] = {}
        handles = [
            modules[site.module].register_forward_hook(lambda m, a, o, i=i, c=captured: c.setdefault(i, o))
            for i, site in enumerate(maps.sites)
        ]
        with torch.no_grad():
            tiny_llama.forward(batch)
        for h in handles:
            h.remove()
        for i in range(len(maps.sites)):
            expected = pool(captured[i], tiny_llama.position_mask(batch))[0]
            torch.testing.assert_close(got[i][t], expected, rtol=1e-4, atol=1e-5)


def test_posthoc_gate_separates_and_steers_the_source_more(tiny_llama):
    maps = random_maps_for(tiny_llama, "mlp_out")
    prompts = _prompts()
    gate = fit_posthoc(tiny_llama, maps, prompts, k=5)
    assert gate.info["fit"] == "post_hoc" and gate.info["prompts"]["control_heldout"] == len(
        prompts["control"]["heldout"]
    )
    assert "gated" in gate.states
    assert all((s == "gated") == (a >= 0.75) for s, a in zip(gate.states, gate.accuracy))
    maps.gate = gate
    source = mean_gate(tiny_llama, maps, prompts["source"]["heldout"])
    control = mean_gate(tiny_llama, maps, prompts["control"]["heldout"])
    assert source > control + 0.1, (source, control)


def test_mean_gate_counts_sites_and_tokens(tiny_llama):
    maps = random_maps_for(tiny_llama, "mlp_out")
    maps.gate = Gate(maps.sites, maps.dims, 2)
    maps.gate.states = ["steer", "off", "off", "steer"]
    texts = ["one two three", "four five six seven eight"]
    assert mean_gate(tiny_llama, maps, texts) == pytest.approx(0.5)
    maps.gate.states = ["steer", "off", "off", "off"]
    assert mean_gate(tiny_llama, maps, texts, skip=["one", "four five"]) == pytest.approx(0.25)


def test_token_gates_are_the_gated_sites_probes_on_the_live_outputs(tiny_llama):
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    maps = random_maps_for(tiny_llama, "mlp_out", generator=torch.Generator().manual_seed(3))
    gate = Gate(maps.sites, maps.dims, 2)
    g = torch.Generator().manual_seed(0)
    for i in (1, 3):  # two gated sites; site 0 steered without a gate, site 2 off: neither counts
        d = maps.dims[i]
        gate.set_probe(
            i,
            torch.randn(d, generator=g),
            torch.randn(2, d, generator=g),
            torch.rand(2) + 0.5,
            torch.randn(2, generator=g),
            torch.randn(1, generator=g),
        )
    gate.states[2] = "off"
    maps.gate = gate
    text = "You are a terrible person, and this is a calm day."
    got = token_gates(model, tokenizer, text, [gate], maps.apply(model, 0.7))
    ids = tokenizer(text, return_tensors="pt").input_ids
    outputs: dict[int, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [  # registered before the maps' hooks: each sees its site's output before its own map
        modules[maps.sites[i].module].register_forward_hook(lambda m, a, o, i=i: outputs.setdefault(i, o))
        for i in (1, 3)
    ]
    try:
        with torch.no_grad(), maps.apply(model, 0.7):
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    expected = torch.stack([torch.sigmoid(gate.logits(i, outputs[i]))[0, :, 0] for i in (1, 3)]).mean(0)
    assert [t for t, _ in got] == [tokenizer.decode(t) for t in ids[0].tolist()]
    torch.testing.assert_close(torch.tensor([v for _, v in got]), expected, rtol=1e-5, atol=1e-6)
    gate.states = ["steer", "off", "off", "steer"]
    assert token_gates(model, tokenizer, text, [gate], maps.apply(model, 1.0)) == []


def test_gate_command_writes_the_gated_maps_and_measures(tiny_llama, tmp_path, capsys):
    maps = random_maps_for(tiny_llama, "mlp_out")
    maps.save(tmp_path / "maps")
    cfg = GateConfig(maps=str(tmp_path / "maps"), output_dir=str(tmp_path / "gated"), source=SOURCE, control=CONTROL)
    cfg.measure = [CONTROL]
    usage = run_gate(cfg, _prompts())
    gated = load_maps(tmp_path / "gated")
    assert gated.gated and not load_maps(tmp_path / "maps").gated  # the maps folder itself is left alone
    assert set(usage) == {"source held out", "control held out", CONTROL}
    assert gated.gate.info["mean_gate"]["source held out"] == pytest.approx(usage["source held out"])
    out = capsys.readouterr().out
    assert "| model.layers.0.mlp.down_proj |" in out and "mean gate (strength 1) on control held out" in out
    with pytest.raises(ConfigError, match="holds no gate"):
        run_gate(GateConfig(maps=str(tmp_path / "maps"), fit=False), _prompts())


def test_export_refuses_a_gated_folder_and_exports_its_maps_ungated(tiny_llama, tmp_path):
    maps = random_maps_for(tiny_llama, "mlp_out")
    maps.save(tmp_path / "plain")
    maps.gate = Gate(maps.sites, maps.dims, 2)
    maps.save(tmp_path / "gated")
    with pytest.raises(MergeError, match="depends on the input"):
        export(tmp_path / "gated", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    export(tmp_path / "gated", tmp_path / "out", ungated=True)
    export(tmp_path / "plain", tmp_path / "ref")
    a, b = load_file(tmp_path / "out" / "model.safetensors"), load_file(tmp_path / "ref" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_export_and_gguf_of_a_gated_folder_are_one_line(tiny_llama, tmp_path):
    maps = random_maps_for(tiny_llama, "mlp_out")
    maps.gate = Gate(maps.sites, maps.dims, 2)
    maps.save(tmp_path / "gated")
    for fmt in ("transformers", "gguf"):
        proc = run_cli("lineas.export", f"maps={tmp_path / 'gated'}", f"output_dir={tmp_path / fmt}", f"format={fmt}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().count("\n") == 0 and "ungated=true" in proc.stderr
