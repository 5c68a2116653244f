"""Data modules (importable as ``lineas.datamodules``)."""

from lineas.datamodules.prompt_files import PromptFileError, read_prompts
from lineas.datamodules.prompt_pair import PromptPairDataModule

__all__ = ["PromptFileError", "PromptPairDataModule", "read_prompts"]
