"""Perplexity of a causal LM on held-out text (what torchmetrics' ``Perplexity`` computes) and its standard error."""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

IGNORE = -100


def _scored_ids(
    tokenizer, texts: list[str], contexts: list[str] | None, max_length: int
) -> list[tuple[list[int], int]]:
    """Per text: its token ids (after its context's, if any) and how many leading ids are context (unscored).

    Without contexts each text is tokenised alone (special tokens as the tokenizer adds them), right-truncated
    to ``max_length``; with contexts, the text's ids (no special tokens) follow the context's, and the
    context is cut from the left if the pair exceeds ``max_length``.
    """
    if contexts is None:
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        return [(list(i), 0) for i in ids]
    if len(contexts) != len(texts):
        raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
    ctx = tokenizer(contexts)["input_ids"]
    own = tokenizer(texts, add_special_tokens=False)["input_ids"]
    pairs = []
    for c, t in zip(ctx, own):
        t = list(t)[:max_length]
        c = list(c)[max(0, len(c) + len(t) - max_length) :]
        pairs.append((c + t, len(c)))
    return pairs


@torch.no_grad()
def text_nll(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    contexts: list[str] | None = None,
    batch_size: int = 16,
    max_length: int = 128,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per text, the summed next-token NLL of its tokens and their count (float64 tensors ``(N,)``).

    With ``contexts``, each text is scored as the continuation of its context (only the text's tokens
    count, the first one included); without, each text alone (its first token has no prediction).
    Whatever hooks are attached to ``model`` (e.g. ``maps.apply``) act during scoring.
    """
    device = next(model.parameters()).device
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    pairs = _scored_ids(tokenizer, texts, contexts, max_length)
    nll, count = [], []
    for start in tqdm(range(0, len(pairs), batch_size), desc="perplexity", disable=not progress, leave=False):
        chunk = pairs[start : start + batch_size]
        width = max(1, max(len(ids) for ids, _ in chunk))
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        for row, (ids, skip) in enumerate(chunk):  # right padding
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            labels[row, skip : len(ids)] = input_ids[row, skip : len(ids)]
        mask = (torch.arange(width) < torch.tensor([len(ids) for ids, _ in chunk])[:, None]).long()
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        labels = labels[:, 1:].to(device)
        # one pass over the (rows, vocabulary) logits, contiguous, in float32
        token_nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="none"
        )
        nll.append(token_nll.view(labels.shape).double().sum(1).cpu())
        count.append((labels != IGNORE).sum(1).double().cpu())
    return torch.cat(nll), torch.cat(count)


def ratio_perplexity(nll: torch.Tensor, count: torch.Tensor) -> tuple[float, float]:
    """``exp`` of the token-weighted mean NLL, and its standard error with texts as the sampling unit.

    The token-weighted mean NLL is a ratio estimator (delta method), and ``se(ppl) = ppl * se(mean NLL)``.
    Texts without a scored token weigh nothing.
    """
    keep = count > 0
    nll, count = nll[keep], count[keep]
    if count.numel() == 0:
        return float("nan"), float("nan")
    mean = nll.sum() / count.sum()
    value = math.exp(float(mean))
    n = nll.numel()
    if n < 2:
        return value, float("nan")
    se_mean = ((nll - mean * count).pow(2).sum() / (n - 1)).sqrt() * math.sqrt(n) / count.sum()
    return value, value * float(se_mean)


def perplexity_with_se(
    model: nn.Module, tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 128, progress: bool = True
) -> tuple[float, float]:
    """``exp`` of the mean next-token NLL over all real tokens of ``texts`` (each text scored alone), and its
    standard error (texts as the sampling unit, see :func:`ratio_perplexity`)."""
    return ratio_perplexity(*text_nll(model, tokenizer, texts, None, batch_size, max_length, progress))


def fluency_with_se(
    model: nn.Module,
    tokenizer,
    contexts: list[str],
    continuations: list[str],
    batch_size: int = 16,
    max_length: int = 128,
    progress: bool = True,
) -> tuple[float, float]:
    """Perplexity of generated ``continuations`` given their prompts (``contexts``) under ``model``, with its
    standard error: the detoxification literature's fluency measure when ``model`` is the unsteered base."""
    return ratio_perplexity(*text_nll(model, tokenizer, continuations, contexts, batch_size, max_length, progress))
