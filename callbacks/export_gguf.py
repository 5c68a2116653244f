"""Exporting the merged model as a GGUF file (llama.cpp, Ollama, LM Studio) at the end of fitting."""

from __future__ import annotations

from pathlib import Path

from lineas.callbacks.export_merged import MergedExport
from lineas.core.maps import AffineMaps


class ExportGGUF(MergedExport):
    """Writes ``dirpath/model.gguf`` with the maps folded in at ``strength`` (rank 0; Llama-family models)."""

    what = "merged GGUF"

    def __init__(self, dirpath: str | Path, strength: float = 1.0, tensor_type: str = "q8_0") -> None:
        super().__init__(dirpath, strength)
        self.tensor_type = tensor_type

    def write(self, maps: AffineMaps) -> str:
        from lineas.tasks.gguf import GGUF_NAME, export_gguf  # lazily: the gguf package only when exporting

        export_gguf(maps, self.dirpath, strength=self.strength, overwrite=True, tensor_type=self.tensor_type)
        return f"{self.dirpath / GGUF_NAME} (touched tensors {self.tensor_type})"
