"""Recipes: the hub ones (not run offline) compose, and their sites exist and merge for their family; the
SmolLM2 ones compose as mergeable fits and the default one fits (slow); the tiny text-to-image ones run
end to end (slow)."""

from __future__ import annotations

import json

import pytest

import lineas
from lineas.cli.train import train
from lineas.models.families import PRESETS
from tests.helpers import compose_cfg, run_cli

HUB = {
    "gemma2_2b_toxicity": "gemma2",
    "qwen25_1_5b_toxicity": "qwen2",
    "qwen25_7b_toxicity": "qwen2",
    "llama3_8b_toxicity": "llama",
}


@pytest.mark.parametrize("recipe", sorted(HUB))
def test_hub_recipe(tmp_path, recipe):
    cfg = compose_cfg(f"recipe={recipe}", f"output_dir={tmp_path}")
    family = HUB[recipe]
    assert "/" in cfg.backbone.model and cfg.backbone.dtype == "bfloat16"
    assert cfg.trainer.precision == "bf16-mixed"  # never bf16-true: the maps stay float32
    assert cfg.data.batch_size * cfg.trainer.devices == 32  # the paper's global batch
    assert (cfg.trainer.strategy == "ddp") == (cfg.trainer.devices > 1)
    # A preset of the family: tests/tasks/test_export.py checks that every preset folds into plain weights.
    assert cfg.module.sites in PRESETS[family]
    module = lineas.LinEASModule(
        lineas.CausalLM(f"tiny:{family}"), sites=cfg.module.sites, checkpointing=cfg.module.checkpointing
    )
    assert len(module.sites) == 4  # one per layer of the tiny model
    assert len(module._checkpoint) == (3 if cfg.module.checkpointing else 0)


@pytest.mark.parametrize(
    "recipe", ["toxicity_smollm2", "toxicity_smollm2_float32", "toxicity_smollm2_sparse", "toxicity_smollm2_paper"]
)
def test_smollm2_recipes_are_mergeable_lineas_fits_with_sparsity(tmp_path, recipe):
    cfg = compose_cfg(f"recipe={recipe}", f"output_dir={tmp_path}")
    assert cfg.module.estimator == "lineas" and not cfg.module.clip  # unclipped: they fold into weights
    assert cfg.callbacks.export_merged is not None and cfg.callbacks.evaluate is not None
    assert cfg.backbone.model == "offline:smollm2-135m-instruct"
    assert cfg.module.sites == ("mlp_in" if recipe == "toxicity_smollm2_paper" else "mlp_out")
    # the default takes bfloat16 where the hardware has it; the others keep the base of their README figures
    assert cfg.backbone.dtype == ("auto" if recipe == "toxicity_smollm2" else "float32")
    if recipe == "toxicity_smollm2_paper":  # the authors' toxicity recipe: SGD at lr 0.1, 1000 steps, raw loss
        assert cfg.module.optimizer._target_ == "torch.optim.SGD" and not cfg.module.normalize
        assert (cfg.module.lr, cfg.trainer.max_steps, cfg.module.sparsity.l1) == (0.1, 1000, 0.0)
    elif recipe == "toxicity_smollm2":  # the fast default (README "Time to steer")
        assert (cfg.module.lr, cfg.trainer.max_steps, list(cfg.callbacks.evaluate.strengths)) == (3e-2, 30, [0, 1])
    else:  # the schedule of the README's result tables
        assert (cfg.module.lr, cfg.trainer.max_steps, list(cfg.callbacks.evaluate.strengths)) == (
            1e-2,
            100,
            [0, 0.5, 1],
        )
        assert cfg.callbacks.evaluate.sampling.batch_size == 16


@pytest.mark.slow
@pytest.mark.usefixtures("all_threads")  # the real SmolLM2 weights: ~1 min
def test_default_recipe_short_fit_lowers_heldout_w2(tmp_path):
    # The default recipe, shortened: 12 steps on the sites of the first 8 layers, no sparsity (the W2
    # fit alone), no export or evaluation; at lr 1e-2 (the default's 3e-2 is tuned for 30 steps on all 30
    # sites: 12 steps of it on these 8 moved held-out W2 only 0.2446 -> 0.2389). On a bfloat16 base
    # (dtype auto) this fit gave 0.2446 -> 0.1958 (x0.800); float32 passed below x0.8 before.
    cfg = compose_cfg(
        "recipe=toxicity_smollm2",
        f"output_dir={tmp_path}",
        "trainer.max_steps=12",
        "module.lr=1e-2",
        "trainer.val_check_interval=6",
        "trainer.enable_progress_bar=false",
        "module.sparsity.l1=0",
        "callbacks.export_merged=null",
        "callbacks.export_gguf=null",
        "callbacks.evaluate=null",
        r"module.sites=['model\.layers\.[0-7]\.mlp\.down_proj']",
    )
    train(cfg)
    summary = json.loads((tmp_path / "fit_summary.json").read_text())
    mean = summary["heldout_w2"]["mean"]
    assert mean["after"] < 0.85 * mean["before"]
    meta = json.loads((tmp_path / "maps" / "lineas.json").read_text())
    assert meta["base_model"] == "offline:smollm2-135m-instruct"
    assert [s["dim"] for s in meta["sites"]] == [576] * 8


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["tiny_sd", "tiny_flux"])
def test_tiny_recipe_trains_draws_a_grid_and_exports(recipe, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models: one thread is far faster on a busy CPU
    (tmp_path / "prompts.txt").write_text("a cat sleeping on a windowsill\na pink elephant in a kitchen\n")
    out = tmp_path / "run"
    proc = run_cli(
        "lineas.train",
        f"recipe={recipe}",
        f"output_dir={out}",
        "trainer.max_steps=20",
        "callbacks.checkpoint=null",
        "trainer.enable_progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lower at" in proc.stdout + proc.stderr
    assert Image.open(out / "grid.png").size == (3 * 34 + 2, 6 * 34 + 2)  # 3 strengths x (3 prompts x 2 seeds)
    assert (out / "merged" / "model_index.json").is_file()
    events = list((out / "tb").glob("events.*"))
    assert events and b"images" in events[0].read_bytes()
    proc = run_cli(
        "lineas.generate",
        f"maps={out / 'maps'}",
        f"prompts={tmp_path / 'prompts.txt'}",
        f"image_grid={tmp_path / 'g.png'}",
        "seeds=[0]",
        "strengths=[0,1]",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(tmp_path / "g.png").size == (2 * 34 + 2, 2 * 34 + 2)


def test_control_recipe_is_the_default_with_the_control_term_and_still_merges(tmp_path):
    cfg = compose_cfg("recipe=toxicity_smollm2_control", f"output_dir={tmp_path}")
    default = compose_cfg("recipe=toxicity_smollm2", f"output_dir={tmp_path}")
    assert cfg.module.control.endswith("neutral/control.txt") and cfg.module.control_weight == 3.0
    assert default.module.control is None
    for key in ("control", "control_weight"):
        cfg.module[key] = default.module[key]
    assert cfg == default  # nothing else differs: the same fit, exports and evaluation


def test_gated_recipe_fits_maps_and_gate_together_and_exports_nothing(tmp_path):
    cfg = compose_cfg("recipe=toxicity_smollm2_gated", f"output_dir={tmp_path}")
    assert cfg.module._target_ == "lineas.training.gated.GatedLinEASModule"
    assert cfg.module.control.endswith("neutral/control.txt") and cfg.module.threshold == 0.75
    assert cfg.callbacks.export_merged is None and cfg.callbacks.export_gguf is None  # a gate does not merge
    assert cfg.callbacks.evaluate is not None and cfg.module.sites == "mlp_out"  # the default recipe's fit
