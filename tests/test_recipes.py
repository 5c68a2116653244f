"""Hub recipes (not run offline): their settings compose, and their sites exist and merge for their family."""

from __future__ import annotations

import pytest

import lineas
from lineas.models.families import PRESETS
from tests.helpers import compose_cfg

HUB = {"gemma2_2b_toxicity": "gemma2", "qwen25_1_5b_toxicity": "qwen2", "qwen25_7b_toxicity": "qwen2",
       "llama3_8b_toxicity": "llama"}


@pytest.mark.parametrize("recipe", sorted(HUB))
def test_hub_recipe(tmp_path, recipe):
    cfg = compose_cfg(f"recipe={recipe}", f"output_dir={tmp_path}")
    family = HUB[recipe]
    assert "/" in cfg.backbone.model and cfg.backbone.dtype == "bfloat16"
    assert cfg.trainer.precision == "bf16-mixed"  # never bf16-true: the maps stay float32
    assert cfg.data.batch_size * cfg.trainer.devices == 32  # the paper's global batch
    assert (cfg.trainer.strategy == "ddp") == (cfg.trainer.devices > 1)
    # A preset of the family: tests/test_merge.py checks that every preset folds into plain weights.
    assert cfg.module.sites in PRESETS[family]
    module = lineas.LinEASModule(lineas.CausalLM(f"tiny:{family}"), sites=cfg.module.sites,
                                 checkpointing=cfg.module.checkpointing)
    assert len(module.sites) == 4  # one per layer of the tiny model
    assert len(module._checkpoint) == (3 if cfg.module.checkpointing else 0)


@pytest.mark.parametrize("recipe", ["toxicity_smollm2", "toxicity_smollm2_sparse", "toxicity_smollm2_paper"])
def test_smollm2_recipes_are_mergeable_lineas_fits_with_sparsity(tmp_path, recipe):
    cfg = compose_cfg(f"recipe={recipe}", f"output_dir={tmp_path}")
    assert cfg.module.estimator == "lineas" and not cfg.module.clip  # unclipped: they fold into weights
    assert cfg.callbacks.export_merged is not None and cfg.callbacks.evaluate is not None
    assert cfg.backbone.model == "offline:smollm2-135m-instruct" and cfg.module.sites == "mlp_out"
    if recipe == "toxicity_smollm2_paper":  # the official schedule
        assert (cfg.module.lr, cfg.trainer.max_steps, list(cfg.module.betas)) == (1e-3, 1000, [0.9, 0.9])
