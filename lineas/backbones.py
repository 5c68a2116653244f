"""Backbones: a frozen model plus the two things the fitting loop asks of it.

The loop never asks "text or image?". It asks a backbone to ``collate`` prompts into a batch,
to run ``forward(batch)`` (hooks attached by the caller end it after the last site), and for
``position_mask(batch)``: which positions of a site output are real samples (None: all of them).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from lineas.shapes import random_model
from lineas.zoo import resolve_model, smollm2_tokenizer_dir


class Backbone(Protocol):
    model: nn.Module
    spec: str

    def collate(self, prompts: list[str]) -> dict[str, Any]: ...

    def forward(self, batch: dict[str, Any]) -> Any: ...

    def position_mask(self, batch: dict[str, Any]) -> torch.Tensor | None: ...


def _dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"dtype {name!r}: choose float32, bfloat16 or float16") from None


class CausalLM:
    """A frozen ``AutoModelForCausalLM`` and its tokenizer.

    ``model`` is a hub id, a local folder, an offline spec (``offline:smollm2-135m-instruct``,
    ``tiny:llama``; see :mod:`lineas.zoo`) or ``shape:NAME``, random weights in the shape of a real
    model (:mod:`lineas.shapes`), created on ``device`` (real weights load there). Prompts are right-padded to at most ``max_length``
    tokens. With ``exclude_bos`` a leading BOS token is not a sample: its activations are the
    same for every prompt (an attention sink) and carry nothing about the prompt.
    """

    def __init__(self, model: str, dtype: str | torch.dtype = "float32", max_length: int = 64,
                 exclude_bos: bool = True, trust_remote_code: bool = False, device: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = model
        shape = model.removeprefix("shape:") if model.startswith("shape:") else None
        path = str(smollm2_tokenizer_dir()) if shape else resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        if shape:
            self.model = random_model(shape, _dtype(dtype), device or "cpu")
        else:
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=_dtype(dtype), trust_remote_code=trust_remote_code, device_map=device)
        self.model.requires_grad_(False).eval()
        self.max_length = max_length
        self.exclude_bos = exclude_bos

    def collate(self, prompts: list[str]) -> dict[str, Any]:
        return dict(self.tokenizer(list(prompts), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          use_cache=False)

    def position_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        mask = batch["attention_mask"].bool()
        bos = self.tokenizer.bos_token_id
        if self.exclude_bos and bos is not None:
            mask = mask.clone()
            mask[:, 0] &= batch["input_ids"][:, 0] != bos
        return mask
