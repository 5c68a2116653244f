"""Random-weight models with the exact shapes of real ones (``shape:NAME``): memory and speed planning offline.

The architectures of the paper's models by their published configs; weights are drawn at random on
the requested device, so nothing is downloaded. Tokenization uses the SmolLM2 tokenizer (its ids are
valid in every vocabulary here). Useful for benchmarks and dry runs, never for steering results.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


def _configs() -> dict[str, Callable[[], Any]]:
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    return {
        "gemma2-2b": lambda: Gemma2Config(
            vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
            sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
            hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192),
        "qwen2.5-1.5b": lambda: Qwen2Config(
            vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
            num_attention_heads=12, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True,
            max_position_embeddings=32768),
        "qwen2.5-7b": lambda: Qwen2Config(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, tie_word_embeddings=False,
            max_position_embeddings=32768),
        "llama3-8b": lambda: LlamaConfig(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0, max_position_embeddings=8192),
    }


SHAPES = ("gemma2-2b", "qwen2.5-1.5b", "qwen2.5-7b", "llama3-8b")


def random_model(name: str, dtype: torch.dtype, device: str | torch.device = "cpu") -> nn.Module:
    """A causal LM shaped like ``name`` (one of :data:`SHAPES`), random weights created on ``device``."""
    from transformers import AutoModelForCausalLM

    configs = _configs()
    if name not in configs:
        raise ValueError(f"shape:{name}: choose one of {', '.join(SHAPES)}")
    with torch.device(device):
        return AutoModelForCausalLM.from_config(configs[name](), dtype=dtype)
