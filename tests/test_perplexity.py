"""Perplexity against a direct computation of the token NLL."""

from __future__ import annotations

import math

import torch

from lineas.metrics.perplexity import perplexity


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
    assert abs(perplexity(model, tok, texts, batch_size=3, progress=False) - expected) < 1e-3 * expected
    assert abs(perplexity(model, tok, texts, batch_size=2, progress=False) - expected) < 1e-3 * expected
