"""Exporting the merged model as a GGUF file (llama.cpp, Ollama, LM Studio) at the end of fitting."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class ExportGGUF(L.Callback):
    """Writes ``dirpath/model.gguf`` with the maps folded in at ``strength`` (rank 0; Llama-family models)."""

    def __init__(self, dirpath: str | Path, strength: float = 1.0, tensor_type: str = "q8_0") -> None:
        self.dirpath = Path(dirpath)
        self.strength = strength
        self.tensor_type = tensor_type

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        maps = pl_module.fitted_maps()
        if maps.gated:
            rank_zero_info(
                "GGUF: skipped, the maps carry a per-token gate (live only); python -m lineas.export "
                "maps=OUTPUT/maps ungated=true exports them without it"
            )
            return
        if maps.clipped:
            rank_zero_info("GGUF: skipped, the maps are clipped (live only)")
            return
        from lineas.tasks.gguf import export_gguf  # lazily: the gguf package only when exporting

        export_gguf(maps, self.dirpath, strength=self.strength, overwrite=True, tensor_type=self.tensor_type)
        rank_zero_info(
            f"merged GGUF (strength {self.strength}, touched tensors {self.tensor_type}): {self.dirpath / 'model.gguf'}"
        )
