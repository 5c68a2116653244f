"""Perplexity of a causal LM on held-out text (what torchmetrics' ``Perplexity`` computes) and its standard error."""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

IGNORE = -100


@torch.no_grad()
def perplexity_with_se(
    model: nn.Module, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 128, progress: bool = True
) -> tuple[float, float]:
    """``exp`` of the mean next-token NLL over all real tokens of ``texts``, and its standard error.

    Each text is scored alone. The standard error treats texts as the sampling unit: the token-weighted
    mean NLL is a ratio estimator (delta method), and ``se(ppl) = ppl * se(mean NLL)``.
    Whatever hooks are attached to ``model`` (e.g. ``maps.apply``) act during scoring.
    """
    device = next(model.parameters()).device
    nll, count = [], []
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="perplexity", disable=not progress, leave=False):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            logits = model(**batch, use_cache=False).logits[:, :-1]
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE)[:, 1:]
            # one pass over the (rows, vocabulary) logits, contiguous, in float32
            token_nll = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="none"
            )
            nll.append(token_nll.view(labels.shape).double().sum(1).cpu())
            count.append((labels != IGNORE).sum(1).double().cpu())
    finally:
        tokenizer.padding_side = side
    nll_t, count_t = torch.cat(nll), torch.cat(count)
    mean = nll_t.sum() / count_t.sum()
    value = math.exp(float(mean))
    n = nll_t.numel()
    if n < 2:
        return value, float("nan")
    se_mean = ((nll_t - mean * count_t).pow(2).sum() / (n - 1)).sqrt() * math.sqrt(n) / count_t.sum()
    return value, value * float(se_mean)
