"""Exporting the merged checkpoint at the end of fitting."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class ExportMerged(L.Callback):
    """Writes a plain HF checkpoint with the maps folded in at ``strength`` to ``dirpath`` (rank 0)."""

    def __init__(self, dirpath: str | Path, strength: float = 1.0, dtype: str | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.strength = strength
        self.dtype = dtype

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        maps = pl_module.fitted_maps()
        if maps.gated:
            rank_zero_info(
                "merged checkpoint: skipped, the maps carry a per-token gate (live only); python -m lineas.export "
                "maps=OUTPUT/maps ungated=true exports them without it"
            )
            return
        if maps.clipped:
            rank_zero_info(
                "merged checkpoint: skipped, the maps are clipped (live only); refit with "
                "module.clip=false for mergeable maps"
            )
            return
        from lineas.tasks.export import export  # lazily: transformers / diffusers only when exporting

        export(maps, self.dirpath, strength=self.strength, overwrite=True, dtype=self.dtype)
        rank_zero_info(f"merged checkpoint (strength {self.strength}): {self.dirpath}")
