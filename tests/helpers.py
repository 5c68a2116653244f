"""Helpers shared by tests: composing the real Hydra config, running the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning
import safetensors.torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from lineas.cli.recipes import register

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(*overrides: str) -> DictConfig:
    """The config `python -m lineas.train` would build for ``overrides``."""
    register()
    with initialize_config_module("lineas.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


class SaveFirstGradients(lightning.Callback):
    """Writes the maps' gradients of the first optimizer step, as the optimizer sees them (after any
    cross-rank reduction), to ``path`` (safetensors; rank 0). Used as ``+callbacks.grads=...``."""

    def __init__(self, path: str):
        self.path = path

    def on_before_optimizer_step(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                                 optimizer: object) -> None:
        if trainer.global_step == 0 and trainer.is_global_zero:
            grads = {name: p.grad.detach().clone() for name, p in pl_module.maps.named_parameters()}
            safetensors.torch.save_file(grads, self.path)


def run_cli(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m module args...`` in a fresh process; returns the completed process (text output)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # tests.helpers importable
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
