"""The training entry point end to end on the tiny recipe: summary, maps file, CLI, resume, user errors."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

import lineas
from lineas.cli.train import claim_output_dir, train
from tests.helpers import compose_cfg, run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    cfg = compose_cfg("recipe=tiny", f"output_dir={out}", "trainer.enable_progress_bar=false")
    train(cfg)
    return out


def test_tiny_fit_lowers_heldout_w2_at_every_site(tiny_run):
    summary = json.loads((tiny_run / "fit_summary.json").read_text())
    sites = summary["heldout_w2"]["sites"]
    assert len(sites) == 4
    for name, w2 in sites.items():
        assert w2["after"] < 0.8 * w2["before"], name
    assert summary["steps"] == 60
    assert summary["heldout_prompts"] == {"source": 40, "target": 40}


def test_maps_file_records_the_run(tiny_run):
    meta = json.loads((tiny_run / "maps" / "lineas.json").read_text())
    assert meta["base_model"] == "tiny:llama"
    assert meta["pooling"] == "mean"
    assert meta["steps"] == 60
    assert [s["site"] for s in meta["sites"]] == [f"model.layers.{i}.mlp.down_proj" for i in range(4)]
    assert all(s["dim"] == 64 for s in meta["sites"])
    assert meta["optimizer"] == {
        "_target_": "torch.optim.adam.Adam",
        "betas": [0.9, 0.9],
        "weight_decay": 0.0,
        "lr": pytest.approx(0.03),
    }
    assert meta["scheduler"] == {"_target_": "lineas.training.optim.cosine", "min_lr_ratio": 1e-3}
    assert set(meta["versions"]) >= {"lineas", "torch", "transformers", "lightning"}
    maps = lineas.load_maps(tiny_run / "maps")
    tensors = load_file(tiny_run / "maps" / "maps.safetensors")
    assert meta["support"]["total"] == maps.support()["total"]
    assert torch.equal(maps.omega[2], tensors["model.layers.2.mlp.down_proj.omega"])
    assert not torch.equal(maps.omega[2], torch.ones(64))


def test_checkpoint_holds_maps_not_base_and_resumes(tmp_path):
    out = tmp_path / "run"
    base = [
        "recipe=tiny",
        f"output_dir={out}",
        "trainer.enable_progress_bar=false",
        "callbacks.checkpoint.every_n_train_steps=5",
    ]
    train(compose_cfg(*base, "trainer.max_steps=10"))
    ckpt = out / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert state["global_step"] == 10
    assert set(state["state_dict"]) == {f"maps.{k}.{i}" for k in ("omega", "beta") for i in range(4)}
    assert ckpt.stat().st_size < 200_000  # the 3.3M-parameter base is not in it

    train(compose_cfg(*base, "trainer.max_steps=20", f"resume={ckpt}"))
    assert json.loads((out / "maps" / "lineas.json").read_text())["steps"] == 20
    resumed = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert resumed["global_step"] == 20
    assert not torch.equal(resumed["state_dict"]["maps.omega.0"], state["state_dict"]["maps.omega.0"])


def test_cli_with_a_user_recipe_file(tmp_path):
    recipe = tmp_path / "my_recipe.yaml"
    recipe.write_text("""\
# @package _global_
backbone:
  model: tiny:llama
data:
  source: ${lineas_data:toxicity/toxic.txt}
  target: ${lineas_data:tiny/polite.txt}
  num_fit: 32
module:
  sites: attn_in
  lr: 0.03
trainer:
  max_steps: 5
  accelerator: cpu
""")
    out = tmp_path / "out"
    proc = run_cli("lineas.train", f"recipe={recipe}", f"output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "maps" / "lineas.json").read_text())
    assert [s["site"] for s in meta["sites"]] == [f"model.layers.{i}.input_layernorm" for i in range(4)]
    assert (out / ".hydra" / "config.yaml").is_file()
    assert list((out / "tb").glob("events.out.tfevents.*"))


def test_cli_refuses_multirun_with_ddp(tmp_path):
    proc = run_cli(
        "lineas.train", "-m", "recipe=tiny", f"output_dir={tmp_path}", "trainer.devices=2", "trainer.strategy=ddp"
    )
    assert proc.returncode != 0
    assert "multirun" in (proc.stdout + proc.stderr).lower()
    assert not (tmp_path / "0" / "maps").exists()


def test_cli_bad_recipe_file(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("module: {sites: [a, b}\n")
    proc = run_cli("lineas.train", f"recipe={recipe}", f"output_dir={tmp_path / 'out'}")
    assert proc.returncode != 0
    assert f"recipe file {recipe} is not valid YAML" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_pattern_matching_nothing_is_named_with_examples(tmp_path):
    # (that the CLI prints such errors as one line, exit 2, is tests/cli/test_main.py's)
    with pytest.raises(lineas.SiteError) as err:
        train(compose_cfg("recipe=tiny", f"output_dir={tmp_path}", "module.sites=[model.decoder.nope]"))
    assert "model.decoder.nope" in str(err.value) and "matches no module" in str(err.value)
    assert "model.layers.0" in str(err.value)
    assert not (tmp_path / "maps").exists()


def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_claim_output_dir(tmp_path):
    run = tmp_path / "run"
    claim_output_dir([f"output_dir={run}"])  # absent: fine
    run.mkdir()
    claim_output_dir([f"output_dir={run}"])  # empty: fine
    (run / "fit_summary.json").write_text("{}")
    with pytest.raises(lineas.LineasError, match=r"holds a run already \(fit_summary.json\).*resume=.*overwrite=true"):
        claim_output_dir([f"output_dir={run}"])
    claim_output_dir([f"output_dir={run}", f"resume={run}/checkpoints/last.ckpt"])  # continuing: fine
    assert (run / "fit_summary.json").exists()
    claim_output_dir([f"output_dir={run}", "overwrite=true"])
    assert not run.exists()  # replaced: removed before the run writes


@pytest.mark.slow  # two CLI runs
def test_second_run_into_the_same_folder_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    first = run_cli(
        "lineas.train", "recipe=tiny", "trainer.max_steps=3", f"output_dir={out}", "trainer.enable_progress_bar=false"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(out)
    assert "maps/maps.safetensors" in before and "checkpoints/last.ckpt" in before
    second = run_cli("lineas.train", "recipe=tiny", "trainer.max_steps=5", f"output_dir={out}")
    assert second.returncode == 2, second.stderr[-2000:]
    assert [line for line in second.stderr.splitlines() if line.startswith("lineas.")] == [
        line for line in second.stderr.splitlines() if "holds a run already" in line
    ]
    assert snapshot(out) == before  # .hydra/, logs, maps, checkpoints: untouched
