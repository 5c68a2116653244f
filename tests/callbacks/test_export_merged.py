"""``ExportMerged``: the merged checkpoint a run writes at the end of fitting equals the steered model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import lineas
from lineas.cli.train import train
from tests.helpers import compose_cfg


@pytest.mark.slow
@pytest.mark.usefixtures("all_threads")  # the real SmolLM2 weights
def test_default_recipe_export_equals_steered_model(tmp_path):
    cfg = compose_cfg(
        "recipe=toxicity_smollm2",
        f"output_dir={tmp_path}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        "trainer.enable_progress_bar=false",
        "callbacks.evaluate=null",
        "callbacks.export_gguf=null",
        "module.sparsity.l1=0",
        r"module.sites=['model\.layers\.(3|7|11)\.mlp\.down_proj']",  # layer 11: the massive activation; the
        # fit stops there (early exit)
    )
    train(cfg)
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["mlp_bias"] is True
    maps = lineas.load_maps(tmp_path / "maps")
    backbone = lineas.CausalLM(maps.info["base_model"])
    batch = backbone.collate(["You are such an idiot.", "Thanks for the lovely dinner last night!"])
    torch.save(dict(batch), tmp_path / "batch.pt")
    with torch.no_grad(), maps.apply(backbone.model, strength=1.0):
        steered = backbone.model(**batch).logits
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained(r'{tmp_path / 'merged'}', dtype=torch.float32)\n"
        f"b = torch.load(r'{tmp_path / 'batch.pt'}', weights_only=True)\n"
        "with torch.no_grad(): out = m(**b).logits\n"
        "assert 'lineas' not in sys.modules\n"
        f"torch.save(out, r'{tmp_path / 'merged_logits.pt'}')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = torch.load(tmp_path / "merged_logits.pt", weights_only=True)
    diff = (merged - steered).abs().max().item()
    print(f"\nSmolLM2 merged vs steered: max abs diff {diff:.3g}")
    assert diff <= 1e-4
