"""Make the official code (apple/ml-act, unpacked at a folder of the user's) importable, unmodified."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

from lineas.core.files import data_path
from lineas.datamodules import PromptPairDataModule


def use_official(ml_act: Path) -> None:
    """Put the folder holding ``act/`` on the import path; ``wandb``, which the official modules import for
    annotations and logging helpers that these scripts never call, is an empty stand-in if absent."""
    if not (ml_act / "act" / "scripts" / "learn_intervention.py").is_file():
        raise SystemExit(f"--ml-act {ml_act}: no act/scripts/learn_intervention.py there; unpack apple/ml-act into it")
    sys.path.insert(0, str(ml_act.resolve()))
    if "wandb" not in sys.modules and importlib.util.find_spec("wandb") is None:
        stand_in = types.ModuleType("wandb")
        stand_in.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        stand_in.apis = types.SimpleNamespace(public=types.SimpleNamespace(Run=object))
        sys.modules["wandb"] = stand_in


def fit_sentences() -> dict[str, list[str]]:
    """The default recipe's fit sentences by the official subset names: 32 toxic (source), 32 non-toxic."""
    toxicity = Path(data_path("toxicity"))
    prompts = PromptPairDataModule(toxicity / "toxic.txt", toxicity / "nontoxic.txt", num_fit=32, seed=0).prompts
    return {"toxic": prompts["source"]["fit"], "non-toxic": prompts["target"]["fit"]}


def statedicts(folder: Path) -> list[Path]:
    """The official fit's ``*.statedict`` files in ``folder``, in layer order."""
    return sorted(folder.glob("*.statedict"), key=lambda p: int(p.stem.split(".")[2]))
