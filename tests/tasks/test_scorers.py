"""Pluggable concept scorers: evaluate, compare and the evaluation callback score with any ConceptScore (one or
several, with their joint success); the sentiment recipe names its scorer."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

import lineas
from lineas.core.errors import ConfigError
from lineas.metrics import Sentiment, Toxicity
from lineas.metrics.concept import build_scorer, build_scorers, concept_columns
from lineas.metrics.sentiment import compound
from lineas.metrics.toxicity import default_classifier
from lineas.tasks.compare import format_table
from lineas.tasks.evaluate import evaluate, format_metrics
from tests.helpers import compose_cfg

TEXTS = [
    "What a lovely, happy day with good friends.",
    "You are a stupid idiot and I hate you.",
    "The box is on the shelf.",
    "I love you, you wonderful idiot!",
    "This is sad and terrible news.",
    "Thank you so much for the great help.",
]


def test_joint_success_is_the_fraction_that_succeeds_for_every_scorer():
    columns, per_text = concept_columns([Sentiment(), Toxicity()], TEXTS)
    positive = compound(TEXTS) > 0.05
    toxic = default_classifier().score(TEXTS)[:, 0] > 0.5
    joint = [bool(p and not t) for p, t in zip(positive.tolist(), toxic.tolist())]  # brute force, text by text
    assert 0 < sum(joint) < len(TEXTS)  # not vacuous: some succeed, some do not
    assert columns["joint_success"] == pytest.approx(sum(joint) / len(TEXTS))
    p = sum(joint) / len(TEXTS)
    assert columns["joint_success_se"] == pytest.approx(torch.tensor(joint, dtype=torch.float64).std().item() / 6**0.5)
    assert (
        columns["sentiment_rate"] == pytest.approx(positive.double().mean().item()) and p <= columns["sentiment_rate"]
    )
    assert columns["toxicity_rate"] == pytest.approx(toxic.double().mean().item())
    assert [r["sentiment"] for r in per_text] == pytest.approx(compound(TEXTS).tolist())
    one, _ = concept_columns([Sentiment()], TEXTS)
    assert "joint_success" not in one and one["sentiment_mean"] == pytest.approx(columns["sentiment_mean"])


def test_evaluate_takes_any_scorer(tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    maps = lineas.AffineMaps(lineas.resolve_sites(model, "mlp_out"), [64] * 4)
    with torch.no_grad():
        maps.beta[1].add_(0.5)
    prompts, neutral = ["The weather today is", "My new job is"], ["The river is long.", "Cats sleep a lot."]
    gen = lineas.Sampling(max_new_tokens=5, do_sample=False, batch_size=2)
    scorers = [{"_target_": "lineas.metrics.Sentiment", "threshold": 0.1}, "lineas.metrics.Toxicity"]
    metrics, rows = evaluate(model, tok, maps, [0.0, 1.0], prompts, neutral, gen, progress=False, scorer=scorers)
    for m in metrics:
        texts = [r["continuation"] for r in rows if r["strength"] == m["strength"]]
        sentiment = Sentiment(threshold=0.1)
        sentiment.update(texts)
        assert m["sentiment_mean"] == pytest.approx(float(sentiment.compute()["mean"]))
        assert m["sentiment_rate"] == pytest.approx(float(sentiment.compute()["rate"]))
        assert m["toxicity_mean"] == pytest.approx(default_classifier().score(texts)[:, 0].mean().item())
        assert "joint_success" in m
        assert [r["sentiment"] for r in rows if r["strength"] == m["strength"]] == pytest.approx(
            compound(texts).tolist()
        )
    table = format_metrics(metrics, build_scorers(scorers))
    assert "positive rate" in table and "toxic rate" in table and "joint success" in table
    rows = [{"method": "base model", "support": None, "dims": None, **metrics[0]}]
    assert "| positive rate | mean sentiment (VADER compound) (± se) |" in format_table(rows, build_scorers(scorers))


def test_scorer_specs_and_refusals():
    assert isinstance(build_scorer("lineas.metrics.Sentiment"), Sentiment)
    assert build_scorer({"_target_": "lineas.metrics.Toxicity", "threshold": 0.9}).threshold == 0.9
    assert build_scorers([Sentiment(), Toxicity()], threshold=0.2)[0].threshold == 0.2  # the first one's
    for bad in ("lineas.metrics.perplexity.perplexity", "no.such.Module", "Toxicity", {"threshold": 1}):
        with pytest.raises(ConfigError, match="name a concept scorer class"):
            build_scorer(bad)
    with pytest.raises(ConfigError, match="each concept may be scored once"):
        build_scorers(["lineas.metrics.Toxicity", "lineas.metrics.Toxicity"])


def test_sentiment_recipe_names_its_scorer_data_and_prompts(tmp_path):
    cfg = compose_cfg("recipe=sentiment_smollm2", f"output_dir={tmp_path}")
    assert cfg.data.source.endswith("sentiment/negative.txt") and cfg.data.target.endswith("sentiment/positive.txt")
    assert cfg.data.num_fit == 32 and cfg.module.sites == "mlp_out"
    assert cfg.module.control.endswith("neutral/control.txt") and cfg.module.control_weight == 1.0
    callback = instantiate(cfg.callbacks.evaluate)
    assert isinstance(callback.scorer, Sentiment) and callback.prompts.endswith("sentiment/prompts.txt")
    assert (
        instantiate(compose_cfg("recipe=toxicity_smollm2", f"output_dir={tmp_path}").callbacks.evaluate).scorer is None
    )


def test_joint_recipe_fits_both_concepts_and_scores_both(tmp_path):
    cfg = compose_cfg("recipe=joint_smollm2", f"output_dir={tmp_path}")
    data = instantiate(cfg.data)
    assert (
        data.concepts == 2 and len(data.prompts["source"]["fit"]) == len(data.others[0].prompts["source"]["fit"]) == 32
    )
    scorers = instantiate(cfg.callbacks.evaluate).scorer
    assert [type(s) for s in scorers] == [Toxicity, Sentiment]
