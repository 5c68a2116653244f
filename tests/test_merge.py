"""Merged checkpoints: plain transformers, in a fresh process, reproduces the steered model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import lineas
from lineas.tasks.export import export
from lineas.core.hooks import probe
from lineas import MergeError
from lineas.core.merge import merge_
from lineas.models.families import PRESETS

PROMPTS = ["Hello there, how are you today?", "Shut up", "The weather is lovely and the sun is out."]
SCALE_ONLY = {"mistral", "phi3"}  # no bias flags in transformers: maps fitted with shift=false
CASES = [(family, preset) for family in ("llama", "gpt2", "qwen2", "gemma2", "mistral", "phi3")
         for preset in sorted(PRESETS[family])]
STRENGTHS = (0.5, 1.0)


def random_maps(backbone: lineas.CausalLM, spec: str, preset: str, shift: bool) -> lineas.AffineMaps:
    sites = lineas.resolve_sites(backbone.model, preset)
    dims, _ = probe(backbone.model, sites, lambda: backbone.forward(backbone.collate(PROMPTS)))
    maps = lineas.AffineMaps(sites, dims, info={"base_model": spec, "model_type": backbone.model.config.model_type})
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            w.add_(0.3 * torch.randn_like(w))
            if shift:
                b.add_(0.3 * torch.randn_like(b))
    return maps


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every family x preset x strength: steered logits (live hooks) and an exported folder."""
    root = tmp_path_factory.mktemp("merged")
    torch.manual_seed(0)
    cases, backbones = [], {}
    for family, preset in CASES:
        spec = f"tiny:{family}"
        backbone = backbones.setdefault(family, lineas.CausalLM(spec))
        maps = random_maps(backbone, spec, preset, shift=family not in SCALE_ONLY)
        batch = backbone.collate(PROMPTS)
        with torch.no_grad():
            base = backbone.model(**batch).logits
        for lam in STRENGTHS:
            with torch.no_grad(), maps.apply(backbone.model, strength=lam):
                steered = backbone.model(**batch).logits
            folder = root / f"{family}-{preset}-{lam}"
            export(maps, folder, strength=lam)
            cases.append({"family": family, "preset": preset, "strength": lam, "folder": str(folder),
                          "steered": steered, "base": base, "batch": batch})
    return root, cases


def test_plain_transformers_reproduces_steered_logits(exported):
    root, cases = exported
    for i, case in enumerate(cases):
        torch.save({k: case["batch"][k] for k in ("input_ids", "attention_mask")}, root / f"batch{i}.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForCausalLM
        from safetensors.torch import save_file
        folders = {[c["folder"] for c in cases]!r}
        out = {{}}
        for i, folder in enumerate(folders):
            batch = torch.load("{root}/batch%d.pt" % i, weights_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
            with torch.no_grad():
                out[str(i)] = model(**batch).logits.contiguous()
        assert not any(m.startswith("lineas") for m in sys.modules), "lineas was imported"
        save_file(out, "{root}/logits.safetensors")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    logits = load_file(root / "logits.safetensors")
    table = []
    for i, case in enumerate(cases):
        diff = (logits[str(i)] - case["steered"]).abs().max().item()
        moved = (case["steered"] - case["base"]).abs().max().item()
        table.append((case["family"], case["preset"], case["strength"], diff, moved))
        assert diff <= 1e-4, table[-1]
        assert moved > 1e-2, f"maps did not steer {table[-1]}"  # the comparison is not vacuous
    print("\nfamily preset strength max|merged-steered| max|steered-base|")
    for row in table:
        print(*row)


def test_export_writes_a_complete_folder(exported):
    _, cases = exported
    folder = cases[0]["folder"]
    names = {p.name for p in __import__("pathlib").Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "lineas_merge.json"} <= names
    config = json.loads((__import__("pathlib").Path(folder) / "config.json").read_text())
    record = json.loads((__import__("pathlib").Path(folder) / "lineas_merge.json").read_text())
    assert config["model_type"] == "llama" and record["strength"] == cases[0]["strength"]
    flags = {"attn_in": "attention_bias", "attn_out": "attention_bias", "mlp_in": "mlp_bias", "mlp_out": "mlp_bias"}
    assert config[flags[cases[0]["preset"]]] is True


def test_refuses_a_residual_stream_site():
    backbone = lineas.CausalLM("tiny:llama")
    sites = lineas.resolve_sites(backbone.model, [r"model\.layers\.1"])
    maps = lineas.AffineMaps(sites, [64])
    with pytest.raises(MergeError, match=r"model\.layers\.1 \(LlamaDecoderLayer\) cannot be merged.*mlp_out"):
        merge_(backbone.model, maps, lineas.fold_rules(backbone.model))


def test_refuses_a_shift_without_a_bias_home():
    backbone = lineas.CausalLM("tiny:mistral")
    maps = random_maps(backbone, "tiny:mistral", "attn_in", shift=True)
    before = backbone.model.model.layers[0].input_layernorm.weight.clone()
    with pytest.raises(MergeError, match="module.shift=false"):
        merge_(backbone.model, maps, lineas.fold_rules(backbone.model))
    assert torch.equal(before, backbone.model.model.layers[0].input_layernorm.weight)  # nothing half-merged


def test_refuses_overwrite_and_a_mismatched_base(tmp_path):
    backbone = lineas.CausalLM("tiny:llama")
    maps = random_maps(backbone, "tiny:llama", "mlp_out", shift=True)
    maps.save(tmp_path / "maps")
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="overwrite=true"):
        export(tmp_path / "maps", tmp_path / "out")
    with pytest.raises(lineas.MapsFileError, match="fitted on a llama model.*gpt2"):
        export(tmp_path / "maps", tmp_path / "other", model="tiny:gpt2")
    assert not (tmp_path / "other").exists()


def test_export_cli(tmp_path):
    backbone = lineas.CausalLM("tiny:llama")
    random_maps(backbone, "tiny:llama", "attn_in", shift=True).save(tmp_path / "maps")
    from tests.helpers import run_cli

    proc = run_cli("lineas.export", f"maps={tmp_path / 'maps'}", "strength=0.5", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    proc = run_cli("lineas.export", f"maps={tmp_path / 'maps'}", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode != 0 and "overwrite=true" in proc.stderr
