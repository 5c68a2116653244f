"""Lightning callbacks (importable as ``lineas.callbacks``)."""

from lineas.callbacks.evaluate_steering import EvaluateSteering
from lineas.callbacks.export_gguf import ExportGGUF
from lineas.callbacks.export_merged import ExportMerged
from lineas.callbacks.fit_summary import FitSummary
from lineas.callbacks.image_grid import ImageGrid
from lineas.callbacks.interrupt_checkpoint import InterruptCheckpoint
from lineas.callbacks.save_maps import SaveMaps
from lineas.callbacks.step_progress import StepProgress

__all__ = [
    "EvaluateSteering",
    "ExportGGUF",
    "ExportMerged",
    "FitSummary",
    "ImageGrid",
    "InterruptCheckpoint",
    "SaveMaps",
    "StepProgress",
]
