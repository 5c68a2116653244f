"""What a concept scorer is: a ``torchmetrics.Metric`` that gives each text one number, and a threshold that
makes a number a *hit* (a toxic text, a positive text).

A scorer implements :meth:`ConceptScore.text_scores` and sets its names; the base class keeps sums (reduced
with ``sum`` across processes under DDP) and ``compute()`` gives ``mean``, ``rate`` (fraction of hits) and
``se`` (standard error of the mean). ``higher_is_better`` says which way steering should move the score: a
*success* is a hit for a concept to induce (positive sentiment) and a miss for one to remove (toxicity).
Evaluation, comparison and the evaluation callback take any scorer (``scorer: {_target_: ...}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any, Sequence

import torch
import torchmetrics

from lineas.core.errors import ConfigError


class ConceptScore(torchmetrics.Metric):
    """Mean score, rate of hits (scores above ``threshold``) and the mean's standard error, over all ``update``s.

    Subclasses set ``name`` (the prefix of table columns, e.g. ``toxicity`` -> ``toxicity_mean``), ``hit_label``
    (what a hit is, e.g. ``toxic``), ``score_label`` (what the score is) and ``higher_is_better``.
    """

    is_differentiable = False
    full_state_update = False
    higher_is_better: bool = False
    name = "score"
    hit_label = "hit"
    score_label = "score"

    def __init__(self, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.add_state("score_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("score_sq_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("above", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def text_scores(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N,)`` float scores of ``texts`` (CPU), without touching the metric's state."""
        raise NotImplementedError

    def hits(self, scores: torch.Tensor) -> torch.Tensor:
        """Which scores are hits: above the threshold."""
        return scores > self.threshold

    def successes(self, scores: torch.Tensor) -> torch.Tensor:
        """Which scores are what steering aims at: hits if ``higher_is_better``, else misses."""
        hits = self.hits(scores)
        return hits if self.higher_is_better else ~hits

    def update(self, texts: Sequence[str] | str | torch.Tensor) -> None:
        """Score ``texts`` and add them; a tensor is taken as scores already computed by :meth:`text_scores`."""
        if isinstance(texts, torch.Tensor):
            scores = texts
        else:
            scores = self.text_scores([texts] if isinstance(texts, str) else list(texts))
        self.score_sum += scores.sum().to(self.score_sum)
        self.score_sq_sum += scores.pow(2).sum().to(self.score_sq_sum)
        self.above += self.hits(scores).sum().to(self.above)
        self.total += scores.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        """``mean`` score, ``rate`` of hits, and ``se``: the standard error of the mean score."""
        total = self.total.to(self.score_sum.dtype)
        mean = self.score_sum / total
        var = (self.score_sq_sum / total - mean**2).clamp_min(0) * total / (total - 1).clamp_min(1)
        return {"mean": mean, "rate": self.above.to(total.dtype) / total, "se": (var / total).sqrt()}


def build_scorer(spec: ConceptScore | Mapping[str, Any] | str) -> ConceptScore:
    """A scorer from a scorer, ``{"_target_": "pkg.mod.Class", **kwargs}`` (as in a recipe) or a dotted class
    path (``lineas.metrics.Sentiment``)."""
    if isinstance(spec, str):
        spec = {"_target_": spec}
    if isinstance(spec, Mapping):
        kwargs = {k: v for k, v in spec.items() if k != "_target_"}
        target = str(spec.get("_target_", ""))
        module, _, name = target.rpartition(".")
        try:
            cls = getattr(import_module(module), name) if module else None
        except (ImportError, AttributeError):
            cls = None
        if not (isinstance(cls, type) and issubclass(cls, ConceptScore)):
            raise ConfigError(
                f"scorer {target!r}: name a concept scorer class, e.g. lineas.metrics.Toxicity or "
                "lineas.metrics.Sentiment (a subclass of lineas.metrics.ConceptScore)"
            )
        spec = cls(**kwargs)
    if not isinstance(spec, ConceptScore):
        raise ConfigError(f"scorer {spec!r}: give a lineas.metrics.ConceptScore or {{_target_: CLASS}}")
    return spec


def build_scorers(
    spec: ConceptScore | Mapping[str, Any] | str | Sequence[Any], threshold: float | None = None
) -> list[ConceptScore]:
    """One scorer or several (a list; the first is the one plotted): see :func:`build_scorer`. ``threshold``
    (if given) replaces the first scorer's own."""
    specs = list(spec) if isinstance(spec, Sequence) and not isinstance(spec, str) else [spec]
    if not specs:
        raise ConfigError("scorer: give at least one concept scorer")
    scorers = [build_scorer(s) for s in specs]
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ConfigError(f"scorers {names}: each concept may be scored once")
    if threshold is not None:
        scorers[0].threshold = float(threshold)
    return scorers


def describe_scorers(scorers: Sequence[ConceptScore]) -> list[dict[str, Any]]:
    """What each scorer is, for a report: its name, class and threshold."""
    return [
        {"name": s.name, "_target_": f"{type(s).__module__}.{type(s).__qualname__}", "threshold": s.threshold}
        for s in scorers
    ]


def concept_columns(scorers: Sequence[ConceptScore], texts: Sequence[str]) -> tuple[dict[str, float], list[dict]]:
    """``texts`` scored by every scorer: the columns ``{name}_mean``, ``{name}_rate``, ``{name}_mean_se`` per
    scorer and, with several, ``joint_success`` (the fraction of texts that are a success for every scorer:
    e.g. non-toxic AND positive) with its standard error ``joint_success_se``; and each text's scores by name."""
    columns: dict[str, float] = {}
    per_text: dict[str, list[float]] = {}
    joint = torch.ones(len(texts), dtype=torch.bool)
    for scorer in scorers:
        scores = scorer.text_scores(list(texts)).float()
        scorer.reset()
        scorer.update(scores)
        stats = scorer.compute()
        columns |= {f"{scorer.name}_{k}": float(stats[k]) for k in ("mean", "rate")}
        columns[f"{scorer.name}_mean_se"] = float(stats["se"])
        per_text[scorer.name] = scores.tolist()
        joint &= scorer.successes(scores)
    if len(scorers) > 1:
        n, p = len(texts), joint.double().mean().item() if len(texts) else float("nan")
        columns["joint_success"] = p
        columns["joint_success_se"] = (p * (1 - p) / max(1, n - 1)) ** 0.5
    rows = [{name: values[i] for name, values in per_text.items()} for i in range(len(texts))]
    return columns, rows
