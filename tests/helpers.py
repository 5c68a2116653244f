"""Helpers shared by tests: random maps, composing the real Hydra config, running the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import lightning
import numpy as np
import safetensors.torch
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from lineas.conf import register
from lineas.core.hooks import probe
from lineas.core.maps import AffineMaps
from lineas.core.sites import Site
from lineas.models.backbone import Backbone
from lineas.models.families import PRESETS, model_type_of, resolve_sites

ROOT = Path(__file__).resolve().parents[1]
PROBE_PROMPTS = ["Hello there, how are you today?", "a pink elephant in a kitchen"]
# Text-to-image (the ``tiny_pipe`` fixture): prompts, seeds, and the sites of every foldable kind (GroupNorm,
# LayerNorm, Conv2d, Linear), in the denoiser and the text encoder, per family.
T2I_PROMPTS = ["a cat sleeping on a windowsill", "a pink elephant in a kitchen"]
T2I_SEEDS = (0, 3)
T2I_MERGE_SITES = {
    "sd": PRESETS["stable_diffusion"]["norms"]
    + PRESETS["stable_diffusion"]["text"]
    + [r"unet\..*attentions\.\d+\.proj_out"],
    "flux": PRESETS["flux"]["attn_out"] + PRESETS["flux"]["ff_out"] + PRESETS["stable_diffusion"]["text"],
}


def _normal(shape: torch.Size, generator: torch.Generator | np.random.Generator | None) -> torch.Tensor:
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.normal(size=tuple(shape))).float()
    return torch.randn(shape, generator=generator)


def random_maps(
    sites: Sequence[Site | str] | AffineMaps,
    dims: Sequence[int] | None = None,
    *,
    scale: float = 0.3,
    shift: bool = True,
    generator: torch.Generator | np.random.Generator | None = None,
    info: dict[str, Any] | None = None,
) -> AffineMaps:
    """Maps away from identity: per site ``omega = 1 + scale*N(0, 1)``, then ``beta = scale*N(0, 1)``
    (``beta = 0`` when not ``shift``: scale-only maps).

    ``sites`` with their ``dims`` (and ``info``) make new maps; an :class:`AffineMaps` (e.g. a module's
    ``maps``) is randomised in place. The draws come from ``generator`` (a torch or numpy generator), else
    from torch's global generator (seeded per test by ``conftest.py``). Returns the maps.
    """
    if isinstance(sites, AffineMaps):
        assert dims is None and info is None, "dims and info come with the given maps"
        maps = sites
    else:
        assert dims is not None, "new maps need their dims"
        maps = AffineMaps(sites, dims, info=info)
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            w.copy_(1 + scale * _normal(w.shape, generator))
            b.copy_(scale * _normal(b.shape, generator) if shift else torch.zeros_like(b))
    return maps


def clipped_maps(d: int = 6) -> AffineMaps:
    """Maps of ``d`` dims at one site ``a``: omega from 0.5 to 2, beta from -1 to 1, clipped to act only
    strictly inside (-0.5, 0.8) (Linear-AcT's support clip: live only, refused by the merge)."""
    maps = AffineMaps(["a"], [d])
    with torch.no_grad():
        maps.omega[0].copy_(torch.linspace(0.5, 2.0, d))
        maps.beta[0].copy_(torch.linspace(-1.0, 1.0, d))
    maps.clip_(0, torch.full((d,), -0.5), torch.full((d,), 0.8))
    return maps


def random_maps_for(backbone: Backbone, sites: str | Sequence[str], **kwargs: Any) -> AffineMaps:
    """:func:`random_maps` at ``sites`` (a preset name or patterns) of ``backbone``, with their dims probed
    by a forward pass and the info an export needs (``base_model``, ``model_type``)."""
    resolved = resolve_sites(backbone.model, sites)
    dims, _ = probe(backbone.model, resolved, lambda: backbone.forward(backbone.collate(PROBE_PROMPTS)))
    info = {"base_model": backbone.spec, "model_type": model_type_of(backbone.model)}
    return random_maps(resolved, dims, info=info, **kwargs)


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

    def on_before_optimizer_step(
        self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, optimizer: object
    ) -> None:
        if trainer.global_step == 0 and trainer.is_global_zero:
            grads = {name: p.grad.detach().clone() for name, p in pl_module.maps.named_parameters()}
            safetensors.torch.save_file(grads, self.path)


def fair_threads() -> int:
    """The cores one test process may use: all of them, or an equal share among pytest-xdist's workers."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def run_cli(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m module args...`` (``module`` ``-c``: ``python -c CODE args...``) in a fresh process; returns the
    completed process (text output)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # tests.helpers importable
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    flag = [] if module == "-c" else ["-m"]
    return subprocess.run(
        [sys.executable, *flag, module, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


# Runs each command line of a JSON list as `python -m MODULE ARGS...` would, one after the other in this one
# process, and writes, as JSON to the file named second, each one's exit status and what it wrote to stdout and
# stderr (an uncaught exception: its traceback, status 1).
_CASES_DRIVER = """
import contextlib, io, json, runpy, sys, traceback, warnings
warnings.simplefilter("ignore")
cases, path, results = json.loads(sys.argv[1]), sys.argv[2], []
for module, args in cases:
    sys.argv, out, err, code = [module, *args], io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue(), err.getvalue()])
open(path, "w").write(json.dumps(results))
"""


def run_cli_cases(cases: Sequence[tuple[str, Sequence[str]]], timeout: int = 600) -> list[tuple[int, str, str]]:
    """``python -m module args...`` for each ``(module, args)``, run one after the other in ONE fresh process
    (a process start is most of a short command's cost); returns each one's exit status, stdout and stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        proc = run_cli("-c", _CASES_DRIVER, json.dumps([[m, list(a)] for m, a in cases]), str(path), timeout=timeout)
        assert proc.returncode == 0 and path.is_file(), proc.stderr[-2000:]
        return [tuple(r) for r in json.loads(path.read_text())]


def quiet_trainer(max_steps: int, **kwargs: Any) -> lightning.Trainer:
    """A CPU Trainer that writes nothing and prints nothing (no logger, checkpoint, bar or summary)."""
    defaults = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "accelerator": "cpu",
    }
    return lightning.Trainer(max_steps=max_steps, **{**defaults, **kwargs})
