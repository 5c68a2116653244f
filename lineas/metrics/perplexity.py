"""Perplexity of a causal LM on held-out text, with torchmetrics' ``Perplexity``."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.text import Perplexity
from tqdm.auto import tqdm

IGNORE = -100


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 128,
               progress: bool = True) -> float:
    """``exp`` of the mean next-token NLL over all real tokens of ``texts`` (each text scored alone).

    Whatever hooks are attached to ``model`` (e.g. ``maps.apply``) act during scoring.
    """
    metric = Perplexity(ignore_index=IGNORE)
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="perplexity", disable=not progress, leave=False):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            logits = model(**batch, use_cache=False).logits.float()
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE)
            metric.update(logits[:, :-1].cpu(), labels[:, 1:].cpu())
    finally:
        tokenizer.padding_side = side
    return float(metric.compute())
