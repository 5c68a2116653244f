"""Evaluating the fitted maps (a concept score, perplexity and fluency at several strengths) at the end of fitting."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lineas.core.files import data_path
from lineas.core.outputs import Output
from lineas.core.prompts import read_prompts
from lineas.tasks.configs import Sampling


class EvaluateSteering(L.Callback):
    """Runs :func:`lineas.tasks.evaluate.evaluate` on the fitted maps (rank 0) and writes its report to ``dirpath``.

    ``sampling``: the fields of :class:`lineas.tasks.configs.Sampling` to change (the defaults are those of
    ``python -m lineas.evaluate``). ``scorer``: the concept scorer(s), as a recipe names them
    (``{_target_: lineas.metrics.Sentiment}``, or a list) or built; None: toxicity. ``threshold``: None keeps the
    (first) scorer's own.
    """

    def __init__(
        self,
        dirpath: str | Path,
        strengths: Sequence[float] = (0.0, 0.5, 1.0),
        prompts: str | None = None,
        perplexity_texts: str | None = None,
        threshold: float | None = None,
        sampling: dict[str, Any] | None = None,
        scorer: Any = None,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.strengths = list(strengths)
        self.prompts = prompts or data_path("toxicity/prompts.txt")
        self.neutral = perplexity_texts or data_path("neutral/wiki.txt")
        self.threshold = threshold
        self.sampling = Sampling(**(sampling or {}))
        self.scorer = scorer

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from lineas.metrics.concept import describe_scorers  # lazily: the scorers' packages
        from lineas.tasks.evaluate import evaluate, format_metrics, scorers_of, write_report

        backbone = pl_module.backbone
        prompts, neutral = read_prompts(self.prompts), read_prompts(self.neutral)
        rank_zero_info(f"evaluating {len(prompts)} prompts and {len(neutral)} sentences at strengths {self.strengths}")

        scorers = scorers_of(self.scorer, self.threshold)
        concept = scorers[0]

        def report(m: dict[str, Any]) -> None:
            rank_zero_info(
                f"  strength {m['strength']:g}: {concept.hit_label} rate {m[f'{concept.name}_rate']:.3f}, mean "
                f"{concept.name} {m[f'{concept.name}_mean']:.3f}, perplexity {m['perplexity']:.2f}, "
                f"fluency {m['fluency']:.2f}"
            )

        maps = pl_module.fitted_maps()
        metrics, rows = evaluate(
            backbone.model,
            backbone.tokenizer,
            maps,
            self.strengths,
            prompts,
            neutral,
            self.sampling,
            progress=False,
            on_row=report,
            scorer=scorers,
        )
        record = {
            "model": backbone.spec,
            "prompts": len(prompts),
            "perplexity_texts": len(neutral),
            "scorers": describe_scorers(scorers),
            "generation": asdict(self.sampling),
            "metrics": metrics,
        }
        with Output(self.dirpath, "eval", overwrite=True) as output:
            write_report(output, record, rows, scorers)
        rank_zero_info(format_metrics(metrics, scorers) + f"\nevaluation: {self.dirpath}")
