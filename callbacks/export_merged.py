"""Exporting the merged model at the end of fitting: a transformers / diffusers folder (``ExportMerged``), and the
body every end-of-fit export shares (``MergedExport``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lineas.core.maps import AffineMaps


class MergedExport(L.Callback):
    """On rank 0 at the end of the fit, the maps folded in at ``strength`` and written to ``dirpath`` by
    :meth:`write`; maps that cannot fold into weights (gated or clipped) are skipped with one line that says why."""

    what = "merged export"

    def __init__(self, dirpath: str | Path, strength: float = 1.0) -> None:
        self.dirpath = Path(dirpath)
        self.strength = strength

    def write(self, maps: AffineMaps) -> str:
        """Write the export; returns what the log line names (the folder or file)."""
        raise NotImplementedError

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        maps = pl_module.fitted_maps()
        if maps.gated:
            rank_zero_info(
                f"{self.what}: skipped, the maps carry a per-token gate (live only); python -m lineas.export "
                "maps=OUTPUT/maps ungated=true exports them without it"
            )
            return
        if maps.clipped:
            rank_zero_info(
                f"{self.what}: skipped, the maps are clipped (live only); refit with module.clip=false for "
                "mergeable maps"
            )
            return
        rank_zero_info(f"{self.what} (strength {self.strength}): {self.write(maps)}")


class ExportMerged(MergedExport):
    """Writes a plain HF checkpoint with the maps folded in at ``strength`` to ``dirpath`` (rank 0)."""

    what = "merged checkpoint"

    def __init__(self, dirpath: str | Path, strength: float = 1.0, dtype: str | None = None) -> None:
        super().__init__(dirpath, strength)
        self.dtype = dtype

    def write(self, maps: AffineMaps) -> str:
        from lineas.tasks.export import export  # lazily: transformers / diffusers only when exporting

        export(maps, self.dirpath, strength=self.strength, overwrite=True, dtype=self.dtype)
        return str(self.dirpath)
