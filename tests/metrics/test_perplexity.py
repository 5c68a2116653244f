"""Perplexity against a direct computation of the token NLL."""

from __future__ import annotations

import math

import numpy as np
import torch

from lineas.metrics.perplexity import fluency_with_se, perplexity_with_se


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


def test_fluency_is_the_perplexity_of_each_continuation_given_its_prompt(tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    prompts = ["You are such a", "The weather today", "In the morning we went to the"]
    continuations = [" kind person.", " is sunny and warm, with a light breeze", " market"]
    nll, count = [], []
    with torch.no_grad():
        for prompt, cont in zip(prompts, continuations):  # one pair at a time, no padding
            p = tok(prompt, return_tensors="pt").input_ids[0]
            c = tok(cont, add_special_tokens=False, return_tensors="pt").input_ids[0]
            logp = model(torch.cat([p, c])[None]).logits[0].log_softmax(-1)
            # token j of the continuation is predicted at position len(p) - 1 + j
            nll.append(-logp[len(p) - 1 : len(p) - 1 + len(c)].gather(1, c[:, None]).sum().item())
            count.append(len(c))
    nll_a, count_a = np.array(nll), np.array(count, dtype=float)
    mean = nll_a.sum() / count_a.sum()
    n = len(prompts)
    se_mean = np.sqrt(n / (n - 1) * np.sum((nll_a - mean * count_a) ** 2)) / count_a.sum()
    value, se = fluency_with_se(model, tok, prompts, continuations, batch_size=2, progress=False)
    assert abs(value - math.exp(mean)) < 1e-4 * value
    assert abs(se - math.exp(mean) * se_mean) < 1e-3 * se and se > 0
    # the prompt is context, not scored: the same continuations after other prompts score differently
    other, _ = fluency_with_se(model, tok, prompts[::-1], continuations, batch_size=2, progress=False)
    assert other != value
