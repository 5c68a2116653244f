"""Causal LMs of ``transformers``: loading one from a model spec, and the fitting backbone over it."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from lineas.core.errors import ConfigError, ModelSourceError
from lineas.models.backbone import parse_dtype
from lineas.models.sources import canonical_spec, resolve
from lineas.models.synthetic import random_model


@contextmanager
def quiet_progress() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") off inside the block."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_causal_lm(
    spec: str, dtype: str | torch.dtype = "float32", device: str | None = None, trust_remote_code: bool = False
) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of a model spec (:func:`lineas.models.sources.resolve`), frozen, in eval mode.

    ``shape:NAME`` gives random weights created on ``device``; real weights load there (default: CPU).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(spec)
    if source.is_pipeline:
        raise ModelSourceError(
            f"{spec} is a diffusers pipeline, not a causal LM: fit it with backbone=pipeline (e.g. recipe=tiny_sd), "
            "or give a causal LM"
        )
    tokenizer = AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)
    if source.shape is not None:
        model = random_model(source.shape, parse_dtype(dtype, device), device or "cpu")
        return model.requires_grad_(False).eval(), tokenizer
    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(
            source.path, dtype=parse_dtype(dtype, device), trust_remote_code=trust_remote_code, device_map=device
        )
    return model.requires_grad_(False).eval(), tokenizer


def context_length(model: nn.Module) -> int | None:
    """The most positions ``model`` attends over (its config's), or None if it does not say."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


class CausalLM:
    """A frozen ``AutoModelForCausalLM`` and its tokenizer.

    ``model`` is a hub id, a local folder, an offline spec (``offline:smollm2-135m-instruct``,
    ``tiny:llama``, ``shape:NAME``; see :mod:`lineas.models.sources`), loaded on ``device``. Prompts are
    right-padded to at most ``max_length`` tokens. With ``exclude_bos`` a leading BOS token is not a sample:
    its activations are the same for every prompt (an attention sink) and carry nothing about the prompt.
    """

    def __init__(
        self,
        model: str,
        dtype: str | torch.dtype = "float32",
        max_length: int = 64,
        exclude_bos: bool = True,
        trust_remote_code: bool = False,
        device: str | None = None,
    ) -> None:
        self.spec = canonical_spec(model)
        self.fit_steps = 1
        self.model, self.tokenizer = load_causal_lm(model, dtype, device, trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        limit = context_length(self.model)
        if (
            isinstance(max_length, bool)
            or not isinstance(max_length, int)
            or not 1 <= max_length <= (limit or max_length)
        ):
            raise ConfigError(
                f"backbone.max_length={max_length!r}: give a whole number of tokens from 1 to the model's context "
                f"({limit} tokens)"
            )
        self.max_length = max_length
        self.exclude_bos = exclude_bos

    def collate(self, prompts: list[str]) -> dict[str, Any]:
        return dict(
            self.tokenizer(
                list(prompts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        )

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)

    def position_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        mask = batch["attention_mask"].bool()
        bos = self.tokenizer.bos_token_id
        if self.exclude_bos and bos is not None:
            mask = mask.clone()
            mask[:, 0] &= batch["input_ids"][:, 0] != bos
        return mask
