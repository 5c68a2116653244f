"""A sentiment scorer that needs no hub: VADER, from the PyPI package ``vaderSentiment`` (MIT licence).

VADER (Hutto and Gilbert, ICWSM 2014) scores a text from a lexicon of ~7,500 words and emoticons rated from
-4 to +4 by human raters, with rules for negation ("not good"), intensifiers ("very"), "but", capitals and
exclamation marks. Its ``compound`` score sums the valences and normalises the sum to ``x / sqrt(x^2 + 15)``
in (-1, 1); VADER's own convention calls a text positive from 0.05 up. The package ships its lexicon files
(``vader_lexicon.txt``, ``emoji_utf8_lexicon.txt``) and reads them from its own folder: nothing is downloaded.
Its one declared dependency, ``requests``, is used only by its interactive demo.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import torch

from lineas.core.errors import ModelSourceError
from lineas.metrics.concept import ConceptScore

PIP_HINT = "pip install vaderSentiment==3.3.2"
POSITIVE = 0.05  # VADER's threshold of a positive text (compound score)


@functools.lru_cache(maxsize=1)
def analyzer() -> Any:
    """The package's ``SentimentIntensityAnalyzer`` with its own lexicons, built once per process."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise ModelSourceError(
            f"the sentiment scorer is VADER from the PyPI package vaderSentiment: run `{PIP_HINT}`"
        ) from None
    return SentimentIntensityAnalyzer()


def compound(texts: Sequence[str] | str) -> torch.Tensor:
    """``(N,)`` float32 VADER compound scores in (-1, 1): negative below 0, positive above."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    vader = analyzer()
    return torch.tensor([vader.polarity_scores(t)["compound"] for t in texts], dtype=torch.float32)


class Sentiment(ConceptScore):
    """Mean VADER compound score and the fraction of positive texts (compound above ``threshold``)."""

    higher_is_better = True
    name = "sentiment"
    hit_label = "positive"
    score_label = "sentiment (VADER compound)"

    def __init__(self, threshold: float = POSITIVE, **kwargs: Any) -> None:
        super().__init__(threshold, **kwargs)

    def text_scores(self, texts: Sequence[str]) -> torch.Tensor:
        return compound(texts)
