"""The VADER sentiment scorer against sentences scored by hand from the package's own lexicon file, and the
concept-scorer aggregation (mean, rate of positives, standard error) against plain statistics."""

from __future__ import annotations

import math
import statistics
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from lineas.core.errors import ModelSourceError
from lineas.metrics import Sentiment
from lineas.metrics import sentiment as vader

NEGATION, BOOSTER, EXCLAMATION = -0.74, 0.293, 0.292  # VADER's published rule constants (Hutto & Gilbert 2014)


def lexicon() -> dict[str, float]:
    path = Path(find_spec("vaderSentiment").submodule_search_locations[0]) / "vader_lexicon.txt"
    rows = (line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {r[0]: float(r[1]) for r in rows}


def by_hand(valence: float) -> float:
    """VADER's compound: the summed valence normalised to x / sqrt(x^2 + 15), rounded to 4 decimals."""
    return round(valence / math.sqrt(valence**2 + 15), 4)


def test_sentences_scored_by_hand():
    lex = lexicon()
    cases = {
        "The food was good.": lex["good"],
        "The food was not good.": lex["good"] * NEGATION,
        "The food was very good.": lex["good"] + BOOSTER,
        "The food was good!!": lex["good"] + 2 * EXCLAMATION,
        "The food was good and the service was bad.": lex["good"] + lex["bad"],
        "The table stands in the kitchen.": 0.0,
    }
    got = vader.compound(list(cases)).tolist()
    want = [by_hand(v) for v in cases.values()]
    assert got == pytest.approx(want, abs=1e-6)
    assert got[0] > 0.4 and got[1] < -0.3  # the lexicon was read: not all zeros


def test_metric_mean_rate_and_standard_error():
    texts = ["What a wonderful, happy day!", "This is terrible and sad.", "The box is on the shelf.", "I love it."]
    scores = vader.compound(texts).tolist()
    one, two = Sentiment(), Sentiment()
    one.update(texts)
    two.update(texts[:1])
    two.update(texts[1:])
    for metric in (one, two):
        out = metric.compute()
        assert out["mean"].item() == pytest.approx(statistics.mean(scores), abs=1e-6)
        assert out["se"].item() == pytest.approx(statistics.stdev(scores) / math.sqrt(4), abs=1e-6)
        assert out["rate"].item() == pytest.approx(sum(s > 0.05 for s in scores) / 4)
    assert one.compute()["rate"].item() == 0.5  # two positive, one negative, one neutral
    assert one.successes(torch.tensor(scores)).tolist() == [s > 0.05 for s in scores]  # positive is the aim
    assert Sentiment.higher_is_better and all(fx.__name__ in ("dim_zero_sum", "sum") for fx in one._reductions.values())


def test_missing_package_is_one_clear_error(monkeypatch):
    vader.analyzer.cache_clear()
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)  # import fails
    with pytest.raises(ModelSourceError, match="pip install vaderSentiment"):
        vader.compound("good")
    vader.analyzer.cache_clear()


def test_shipped_sentiment_sets():
    """The fit sets lean the way they are named by VADER's reckoning; prompt sets are disjoint from each other and
    from the fit sentences."""
    from lineas.core.files import data_path
    from lineas.core.prompts import read_prompts

    sets = {
        name: read_prompts(data_path(f"sentiment/{name}.txt"))
        for name in ("negative", "positive", "prompts_dev", "prompts")
    }
    assert len(sets["negative"]) >= 40 and len(sets["positive"]) >= 40
    assert (vader.compound(sets["negative"]) < 0).all() and (vader.compound(sets["positive"]) > 0.05).all()
    fit = sets["negative"] + sets["positive"]
    prompts = sets["prompts_dev"] + sets["prompts"]
    assert len(set(prompts)) == len(prompts)
    assert not [p for p in prompts if any(s.startswith(p) for s in fit)]


def test_the_joint_prompts_are_hostile_beginnings_no_other_set_holds():
    """The joint-success prompts (toxic-leaning and negative) lean nowhere positive by VADER and share no line
    with the toxicity or sentiment prompt and fit sets."""
    from lineas.core.files import data_path
    from lineas.core.prompts import read_prompts

    joint = read_prompts(data_path("joint/prompts.txt"))
    assert len(joint) == len(set(joint)) >= 60
    assert (vader.compound(joint) < 0.05).all()
    names = ["toxicity/" + n for n in ("toxic", "nontoxic", "prompts_dev", "prompts")]
    names += ["sentiment/" + n for n in ("negative", "positive", "prompts_dev", "prompts")]
    others = [line for name in names for line in read_prompts(data_path(f"{name}.txt"))]
    assert not [p for p in joint if any(line.startswith(p) or p.startswith(line) for line in others)]
