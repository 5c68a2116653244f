"""Metrics for steered generations: concept scorers (:class:`ConceptScore`: toxicity, sentiment) and perplexity."""

from lineas.metrics.concept import ConceptScore
from lineas.metrics.sentiment import Sentiment
from lineas.metrics.toxicity import Toxicity

__all__ = ["ConceptScore", "Sentiment", "Toxicity"]
