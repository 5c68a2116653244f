"""The fit's progress bar: steps of max_steps, with the loss, the held-out W2 and the support."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class StepProgress(RichProgressBar):
    """Lightning's rich bar, reading ``fit`` (one epoch holds the whole run) and the three figures that matter."""

    NAMES = {"train/loss": "loss", "val/w2": "val W2", "train/support": "support"}

    def _get_train_description(self, current_epoch: int) -> str:
        return "fit"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        shown = {new: items[old] for old, new in self.NAMES.items() if old in items}
        if "support" in shown:
            shown["support"] = f"{int(shown['support'])}/{sum(pl_module.maps.dims)}"
        return shown
