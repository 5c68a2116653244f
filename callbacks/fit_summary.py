"""Held-out W2 per site before (strength 0 = base model) and after fitting, written as JSON."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lineas.core.files import write_json


class FitSummary(L.Callback):
    """Writes ``path`` (``fit_summary.json``) at the end of fitting and prints a short table."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.before: dict[str, float] | None = None
        self.start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()
        if trainer.datamodule.has_heldout:
            self.before = pl_module.heldout_w2(strength=0.0)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        after = pl_module.heldout_w2() if self.before is not None else None
        if not trainer.is_global_zero:
            return
        summary = {
            "steps": int(trainer.global_step),
            "wall_s": round(time.perf_counter() - self.start, 2),
            "heldout_prompts": {side: len(p["heldout"]) for side, p in trainer.datamodule.prompts.items()},
            "support": pl_module.maps.support(pl_module.sparsity.eps),
            "normalized_w2": pl_module.normalize,
            "heldout_w2": None,
        }
        if after is not None:
            mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
            summary["heldout_w2"] = {
                "mean": {"before": mean(self.before), "after": mean(after)},
                "sites": {s: {"before": self.before[s], "after": after[s]} for s in after},
            }
            down = sum(after[s] < self.before[s] for s in after)
            rank_zero_info(
                f"held-out W2 (mean over {len(after)} sites): {mean(self.before):.4g} -> "
                f"{mean(after):.4g}; lower at {down}/{len(after)} sites"
            )
        write_json(self.path, summary)
        rank_zero_info(f"fit summary: {self.path}")
