"""Perplexity against a direct computation of the token NLL."""

from __future__ import annotations

import math

import numpy as np
import torch

from lineas.metrics.perplexity import perplexity_with_se


def test_perplexity_matches_direct_nll_and_ignores_padding(tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    texts = ["The river flows through the old town.", "Birds sing.", "A quiet morning in the hills."]
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:  # one at a time: no padding at all
            ids = tok(text, return_tensors="pt").input_ids
            logp = model(ids).logits[0, :-1].log_softmax(-1)
            nll -= logp.gather(1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
    expected = math.exp(nll / count)
    assert abs(perplexity_with_se(model, tok, texts, batch_size=3, progress=False)[0] - expected) < 1e-3 * expected
    assert abs(perplexity_with_se(model, tok, texts, batch_size=2, progress=False)[0] - expected) < 1e-3 * expected


def test_perplexity_equals_torchmetrics_on_a_padded_batch(tiny_llama):
    from torchmetrics.text import Perplexity

    model, tok = tiny_llama.model, tiny_llama.tokenizer
    texts = ["The river flows through the old town.", "Birds sing.", "A quiet morning in the hills."]
    tok.padding_side = "right"
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits[:, :-1]
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)[:, 1:]
    reference = float(Perplexity(ignore_index=-100)(logits, labels))
    assert abs(perplexity_with_se(model, tok, texts, batch_size=3, progress=False)[0] - reference) < 1e-5 * reference


def test_perplexity_standard_error_against_a_bootstrap_free_delta_method(tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    texts = [
        "The river flows through the old town.",
        "Birds sing.",
        "A quiet morning in the hills.",
        "Trains leave every hour from the central station.",
        "She read the letter twice.",
    ]
    nll, count = [], []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt").input_ids
            logp = model(ids).logits[0, :-1].log_softmax(-1)
            nll.append(-logp.gather(1, ids[0, 1:, None]).sum().item())
            count.append(ids.shape[1] - 1)
    nll_a, count_a = np.array(nll), np.array(count, dtype=float)
    mean = nll_a.sum() / count_a.sum()
    # Ratio estimator: se(mean) = sqrt(n/(n-1) * sum((nll - mean*count)^2)) / sum(count).
    n = len(texts)
    se_mean = np.sqrt(n / (n - 1) * np.sum((nll_a - mean * count_a) ** 2)) / count_a.sum()
    value, se = perplexity_with_se(model, tok, texts, batch_size=2, progress=False)
    assert abs(value - math.exp(mean)) < 1e-3 * value
    assert abs(se - math.exp(mean) * se_mean) < 1e-3 * se and se > 0
