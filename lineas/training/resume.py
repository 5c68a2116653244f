"""Resuming a fit: what a checkpoint was fitted on (checked against the run that resumes it), and the
learning-rate schedule of a run extended beyond the steps it was planned for."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from lineas.core.errors import ConfigError


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint of lineas, read with ``weights_only=True``; one clear error if it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"resume={path}: no such checkpoint (runs keep theirs in OUTPUT/checkpoints/last.ckpt)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle: torch's message would suggest weights_only=False
        raise ConfigError(
            f"resume={path}: not a readable lineas checkpoint ({type(err).__name__}); "
            "it may be truncated: resume from an earlier one or start a new run"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"resume={path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def check_resume_steps(checkpoint: dict[str, Any], max_steps: int, maps_dir: str | Path) -> None:
    """Refuse a resume that would not train: ``max_steps`` at or below the checkpoint's step, or below the step
    of the maps already written in ``maps_dir`` (they would be rolled back to an earlier state)."""
    done = int(checkpoint.get("global_step", 0))
    try:
        written = int(json.loads((Path(maps_dir) / "lineas.json").read_text()).get("steps", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        written = 0
    if max_steps != -1 and max_steps <= max(done, written):
        raise ConfigError(
            f"trainer.max_steps={max_steps}: the checkpoint is at step {done}"
            + (f" and the run's maps at step {written}" if written > done else "")
            + f"; resuming would not train and would roll the maps back: give max_steps above {max(done, written)}"
        )


def check_fit_record(saved: dict[str, Any] | None, current: dict[str, Any], path: str | Path | None) -> None:
    """Refuse to resume a checkpoint fitted on another model, sites, data or loss than this run's."""
    where = f"resume={path}" if path else "the checkpoint"
    if saved is None:
        raise ConfigError(
            f"{where}: the checkpoint does not record what it was fitted on (written by an older "
            "lineas); start a new run"
        )
    for key, value in current.items():
        if saved.get(key) != value:
            raise ConfigError(
                f"{where}: the checkpoint was fitted with {key} = {_short(saved.get(key))}, this run "
                f"has {key} = {_short(value)}; resume with the run's own settings, or start a new run "
                "in a new output_dir"
            )


def replan_cosine(scheduler: torch.optim.lr_scheduler.CosineAnnealingLR, total: int) -> float | None:
    """Stretch a cosine schedule to ``total`` steps at its current step (an extended run); the new lr, or None
    if the schedule already ends at ``total``. The lr becomes what a run planned for ``total`` steps has now."""
    if scheduler.T_max == total:
        return None
    step = scheduler.last_epoch
    scheduler.T_max = total
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * step / total)) / 2
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
    return scheduler._last_lr[0]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
