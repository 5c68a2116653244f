"""Merged checkpoints: plain transformers (diffusers), in a fresh process, reproduces the steered model;
what export refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy

import lineas
from lineas import MergeError
from lineas.core.outputs import mark
from lineas.models.families import PRESETS
from lineas.tasks.export import export
from lineas.tasks.images import render
from lineas.tasks.steered import load_steering
from tests.helpers import T2I_MERGE_SITES, T2I_PROMPTS, T2I_SEEDS, clipped_maps, random_maps_for, run_cli

PROMPTS = ["Hello there, how are you today?", "Shut up", "The weather is lovely and the sun is out."]
SCALE_ONLY = {"mistral", "phi3"}  # no bias flags in transformers: maps fitted with shift=false
CASES = [
    (family, preset)
    for family in ("llama", "gpt2", "qwen2", "gemma2", "mistral", "phi3")
    for preset in sorted(PRESETS[family])
]
STRENGTHS = (0.5, 1.0)
PIXEL_TOL = 1e-4  # images in [0, 1], float32 throughout: folding reorders a few float operations


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every family x preset x strength: steered logits (live hooks) and an exported folder."""
    root = tmp_path_factory.mktemp("merged")
    torch.manual_seed(0)
    cases, backbones = [], {}
    for family, preset in CASES:
        spec = f"tiny:{family}"
        backbone = backbones.setdefault(family, lineas.CausalLM(spec))
        maps = random_maps_for(backbone, preset, scale=0.3, shift=family not in SCALE_ONLY)
        batch = backbone.collate(PROMPTS)
        with torch.no_grad():
            base = backbone.model(**batch).logits
        for lam in STRENGTHS:
            with torch.no_grad(), maps.apply(backbone.model, strength=lam):
                steered = backbone.model(**batch).logits
            folder = root / f"{family}-{preset}-{lam}"
            export(maps, folder, strength=lam)
            cases.append(
                {
                    "family": family,
                    "preset": preset,
                    "strength": lam,
                    "folder": str(folder),
                    "steered": steered,
                    "base": base,
                    "batch": batch,
                }
            )
    return root, cases


@pytest.mark.slow  # spawns a process
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


@pytest.mark.slow  # exports every family (shared fixture)
def test_export_writes_a_complete_folder(exported):
    _, cases = exported
    folder = cases[0]["folder"]
    names = {p.name for p in Path(folder).iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "lineas_merge.json",
    } <= names
    config = json.loads((Path(folder) / "config.json").read_text())
    record = json.loads((Path(folder) / "lineas_merge.json").read_text())
    assert config["model_type"] == "llama" and record["strength"] == cases[0]["strength"]
    flags = {"attn_in": "attention_bias", "attn_out": "attention_bias", "mlp_in": "mlp_bias", "mlp_out": "mlp_bias"}
    assert config[flags[cases[0]["preset"]]] is True


def test_refuses_overwrite_and_a_mismatched_base(tmp_path):
    backbone = lineas.CausalLM("tiny:llama")
    maps = random_maps_for(backbone, "mlp_out", scale=0.3)
    maps.save(tmp_path / "maps")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        export(tmp_path / "maps", tmp_path / "out")
    with pytest.raises(FileExistsError, match="not written by lineas"):
        export(tmp_path / "maps", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep"
    with pytest.raises(lineas.MapsFileError, match="fitted on a llama model.*gpt2"):
        export(tmp_path / "maps", tmp_path / "other", model="tiny:gpt2")
    assert not (tmp_path / "other").exists()


def test_export_never_replaces_its_own_input_or_a_file(tmp_path):
    run = tmp_path / "R"
    random_maps_for(lineas.CausalLM("tiny:llama"), "mlp_out", scale=0.3).save(run / "maps")
    mark(run, "run")
    before = sorted((p.name, p.read_bytes()) for p in (run / "maps").iterdir())
    for out in (run / "maps", run, run / "maps" / "merged"):
        with pytest.raises(lineas.LineasError, match="overlaps|inside the maps folder"):
            export(run / "maps", out, overwrite=True)
    assert sorted((p.name, p.read_bytes()) for p in (run / "maps").iterdir()) == before
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(lineas.LineasError, match="is a file, not a folder"):
        export(run / "maps", tmp_path / "notes.txt", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_merged_tied_head_matches_live_maps_and_unties(tmp_path):
    """A map on lm_head of a tied-embedding model (tiny Llama) changes the head only, merged as live."""
    from transformers import AutoModelForCausalLM

    backbone = lineas.CausalLM("tiny:llama")
    model = backbone.model
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    maps = random_maps_for(backbone, ["lm_head"], scale=0.3, shift=False)
    batch = backbone.collate(PROMPTS)
    with torch.no_grad():
        base = model(**batch).logits
        with maps.apply(model, strength=1.0):
            live = model(**batch).logits
    export(maps, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert merged.config.tie_word_embeddings is False
    assert merged.lm_head.weight is not merged.model.embed_tokens.weight
    assert torch.equal(merged.model.embed_tokens.weight, model.model.embed_tokens.weight)  # the input side as is
    with torch.no_grad():
        out = merged(**batch).logits
    assert (live - base).abs().max() > 0.1  # the map steers
    assert (out - live).abs().max() < 1e-4


def test_maps_fitted_on_a_merged_checkpoint_run_on_it_and_chain_provenance(tmp_path, monkeypatch):
    backbone = lineas.CausalLM("tiny:llama")
    export(random_maps_for(backbone, "mlp_out", scale=0.3), tmp_path / "m1", strength=0.5)
    monkeypatch.chdir(tmp_path)
    on_merged = lineas.CausalLM("m1")  # a relative folder is recorded as its absolute path
    assert on_merged.spec == str((tmp_path / "m1").resolve())
    second = random_maps_for(on_merged, "attn_out", scale=0.3)
    second.save(tmp_path / "maps2")
    steering = load_steering(str(tmp_path / "maps2"), None)
    assert steering.spec == on_merged.spec and steering.maps is not None
    with pytest.raises(lineas.ConfigError, match="already in its weights"):  # maps of the base, on the merge
        random_maps_for(backbone, "mlp_out").save(tmp_path / "maps1")
        load_steering(str(tmp_path / "maps1"), str(tmp_path / "m1"))
    export(tmp_path / "maps2", tmp_path / "m2")
    record = json.loads((tmp_path / "m2" / "lineas_merge.json").read_text())
    assert record["base_model"] == on_merged.spec
    assert record["base_merge"]["strength"] == 0.5 and record["base_merge"]["base_model"] == "tiny:llama"


@pytest.mark.slow  # spawns a process
def test_export_cli(tmp_path):
    backbone = lineas.CausalLM("tiny:llama")
    random_maps_for(backbone, "attn_in", scale=0.3).save(tmp_path / "maps")
    proc = run_cli("lineas.export", f"maps={tmp_path / 'maps'}", "strength=0.5", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
    proc = run_cli("lineas.export", f"maps={tmp_path / 'maps'}", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode != 0 and "overwrite=true" in proc.stderr


def test_export_warns_outside_the_unit_interval_and_writes_files_by_the_umask(tmp_path):
    backbone = lineas.CausalLM("tiny:llama")
    maps = random_maps_for(backbone, "mlp_out", scale=0.3)
    old = os.umask(0o022)
    try:
        with pytest.warns(UserWarning, match="strength 2.0 is outside"):
            export(maps, tmp_path / "out", strength=2.0)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}["model.safetensors"] == 0o644


@pytest.mark.slow  # spawns a process
def test_export_of_non_finite_maps_is_one_line_naming_file_and_site(tmp_path):
    backbone = lineas.CausalLM("tiny:llama")
    maps = random_maps_for(backbone, "mlp_out", scale=0.3)
    with torch.no_grad():
        maps.beta[2][7] = float("nan")
    maps.save(tmp_path / "maps")
    proc = run_cli("lineas.export", f"maps={tmp_path / 'maps'}", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lineas.")]
    assert len(lines) == 1 and "maps.safetensors: model.layers.2.mlp.down_proj.beta holds non-finite" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # spawns a process
def test_clipped_maps_refuse_to_export(tmp_path):
    clipped_maps().save(tmp_path / "m")
    with pytest.raises(MergeError, match=r"clipped.*module.clip=false"):
        export(tmp_path / "m", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    proc = run_cli("lineas.export", f"maps={tmp_path / 'm'}", f"output_dir={tmp_path / 'merged'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "module.clip=false" in proc.stderr


@pytest.mark.slow
def test_merged_pipeline_in_plain_diffusers_matches_live_maps(tiny_pipe, tmp_path):
    family = tiny_pipe.spec.removeprefix("tiny:")
    maps = random_maps_for(tiny_pipe, T2I_MERGE_SITES[family], scale=0.2)
    lam = 0.7
    live = render(tiny_pipe.pipe, T2I_PROMPTS, T2I_SEEDS, maps, strengths=(lam,), **tiny_pipe.call_kwargs)[0]
    base = render(tiny_pipe.pipe, T2I_PROMPTS, T2I_SEEDS, **tiny_pipe.call_kwargs)[0]
    export(maps, tmp_path / "merged", strength=lam)
    script = textwrap.dedent(f"""
        import sys, torch
        from diffusers import DiffusionPipeline
        from safetensors.numpy import save_file
        pipe = DiffusionPipeline.from_pretrained({str(tmp_path / "merged")!r})
        prompts = [p for p in {T2I_PROMPTS!r} for _ in {T2I_SEEDS!r}]
        gens = [torch.Generator().manual_seed(s) for _ in {T2I_PROMPTS!r} for s in {T2I_SEEDS!r}]
        images = pipe(prompts, generator=gens, output_type="np", **{tiny_pipe.call_kwargs!r}).images
        assert not any(m.startswith("lineas") for m in sys.modules), "lineas was imported"
        save_file({{"images": images.copy(order="C")}}, {str(tmp_path / "images.safetensors")!r})
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = load_numpy(tmp_path / "images.safetensors")["images"]
    diff, moved = np.abs(merged - live).max(), np.abs(live - base).max()
    print(f"\n{family}: max|merged - live| = {diff:.2e}, max|live - base| = {moved:.3f}")
    assert diff <= PIXEL_TOL
    assert moved > 0.02  # the comparison is not vacuous
