"""Metrics for steered generations."""

from lineas.metrics.toxicity import Toxicity

__all__ = ["Toxicity"]
