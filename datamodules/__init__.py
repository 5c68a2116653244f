"""Data modules (importable as ``lineas.datamodules``)."""

from lineas.core.errors import PromptFileError
from lineas.core.prompts import read_prompts
from lineas.datamodules.joint_pairs import JointPromptPairs
from lineas.datamodules.prompt_pair import PromptPairDataModule, split_prompts

__all__ = ["JointPromptPairs", "PromptFileError", "PromptPairDataModule", "read_prompts", "split_prompts"]
