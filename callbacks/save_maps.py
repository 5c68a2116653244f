"""Saving the fitted maps folder at the end of fitting."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class SaveMaps(L.Callback):
    """Writes ``dirpath/maps.safetensors`` and ``dirpath/lineas.json`` (rank 0, atomically)."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        maps = pl_module.fitted_maps()
        if trainer.is_global_zero:
            maps.save(self.dirpath)
            support = maps.support(pl_module.sparsity.eps)["total"]
            rank_zero_info(f"maps: {self.dirpath} (support: {support} of {sum(maps.dims)} dimensions)")
