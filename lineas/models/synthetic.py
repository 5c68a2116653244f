"""Causal LMs with random weights, built from configs: nothing is downloaded.

- ``tiny:FAMILY`` (llama, gpt2, qwen2, gemma2, mistral, phi3): hidden 64, 4 layers, seeded, saved once as
  an HF folder with the SmolLM2 tokenizer; for tests and CI.
- ``shape:NAME``: the exact shapes of the paper's models (published configs), drawn on the requested
  device, for memory and speed planning. Tokenization uses the SmolLM2 tokenizer (its ids are valid
  in every vocabulary here). Useful for benchmarks and dry runs, never for steering results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lineas.core.errors import ModelSourceError
from lineas.models.cache import cached
from lineas.models.families import FAMILIES
from lineas.models.offline import smollm2_tokenizer_dir


def tiny_config(family: str, vocab_size: int) -> Any:
    """The tiny config of ``family`` (its family file's ``tiny``: hidden 64, 4 layers) for tests."""
    builder = FAMILIES[family].tiny if family in FAMILIES else None
    if builder is None:
        known = sorted(t for t, f in FAMILIES.items() if f.tiny is not None)
        raise ModelSourceError(f"tiny:{family}: no such tiny model; choose one of {known}")
    return builder(vocab_size)


def tiny_dir(family: str, seed: int = 0) -> Path:
    """A tiny random ``family`` causal LM with the SmolLM2 tokenizer, saved once as an HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_config(family, len(tok)), dtype=torch.float32)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return cached(f"tiny-{family}-seed{seed}", build)


def _configs() -> dict[str, Callable[[], Any]]:
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    return {
        "gemma2-2b": lambda: Gemma2Config(
            vocab_size=256000,
            hidden_size=2304,
            intermediate_size=9216,
            num_hidden_layers=26,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=256,
            query_pre_attn_scalar=256,
            sliding_window=4096,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=8192,
        ),
        "qwen2.5-1.5b": lambda: Qwen2Config(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            rope_theta=1e6,
            tie_word_embeddings=True,
            max_position_embeddings=32768,
        ),
        "qwen2.5-7b": lambda: Qwen2Config(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            rope_theta=1e6,
            tie_word_embeddings=False,
            max_position_embeddings=32768,
        ),
        "llama3-8b": lambda: LlamaConfig(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            rope_theta=500000.0,
            max_position_embeddings=8192,
        ),
    }


MODEL_SHAPES = ("gemma2-2b", "qwen2.5-1.5b", "qwen2.5-7b", "llama3-8b")


def random_model(name: str, dtype: torch.dtype, device: str | torch.device = "cpu") -> nn.Module:
    """A causal LM shaped like ``name`` (one of :data:`MODEL_SHAPES`), random weights created on ``device``."""
    from transformers import AutoModelForCausalLM

    configs = _configs()
    if name not in configs:
        raise ModelSourceError(f"shape:{name}: choose one of {', '.join(MODEL_SHAPES)}")
    with torch.device(device):
        return AutoModelForCausalLM.from_config(configs[name](), dtype=dtype)
