"""What a concept scorer is: a ``torchmetrics.Metric`` that gives each text one number, and a threshold that
makes a number a *hit* (a toxic text, a positive text).

A scorer implements :meth:`ConceptScore.text_scores` and sets its names; the base class keeps sums (reduced
with ``sum`` across processes under DDP) and ``compute()`` gives ``mean``, ``rate`` (fraction of hits) and
``se`` (standard error of the mean). ``higher_is_better`` says which way steering should move the score: a
*success* is a hit for a concept to induce (positive sentiment) and a miss for one to remove (toxicity).
Evaluation, comparison and the evaluation callback take any scorer (``scorer: {_target_: ...}``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torchmetrics


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

    def update(self, texts: Sequence[str] | str) -> None:
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
