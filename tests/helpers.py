"""Helpers shared by tests: composing the real Hydra config, running the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from lineas.config import register

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(*overrides: str) -> DictConfig:
    """The config `python -m lineas.train` would build for ``overrides``."""
    register()
    with initialize_config_module("lineas.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def run_cli(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m module args...`` in a fresh process; returns the completed process (text output)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
