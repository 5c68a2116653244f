"""Fitting from a composed Hydra config, and the command line of ``python -m lineas.train``.

Two things Hydra does not do by itself are done to the arguments before it sees them: a recipe given
as a file path is registered under a name, and ``output_dir=D`` becomes Hydra's run (or sweep) dir,
so that DDP children, which Lightning relaunches with the parent's ``hydra.run.dir``, write to the
same folder. The children re-run the original arguments (Lightning rebuilds them from ``sys.argv``).
"""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE
from omegaconf import DictConfig

from lineas.callbacks import InterruptCheckpoint, StepProgress
from lineas.cli.main import hydra_entry
from lineas.conf import register_recipe_file
from lineas.core.errors import ConfigError, FitInterrupted
from lineas.core.outputs import Output, within
from lineas.training.job import build_fit, check_config
from lineas.training.resume import check_resume_steps, read_checkpoint

STARTUP = (".hydra", "train.log", "multirun.yaml")  # what Hydra writes into a run's folder before it starts
PRINT_ONLY = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def train(cfg: DictConfig) -> Path:
    """Fit the maps described by a composed config; returns the output folder."""
    cfg = check_config(cfg)
    out = Path(cfg.output_dir)
    if cfg.resume is not None:  # a truncated or foreign file, or a step the run is past: refused before loading
        check_resume_steps(read_checkpoint(cfg.resume), cfg.trainer.max_steps, out / "maps")
    last = out / "checkpoints" / "last.ckpt"
    interrupt = InterruptCheckpoint(last)
    with interrupt.listening():
        progress = [StepProgress()] if cfg.trainer.enable_progress_bar and _RICH_AVAILABLE else []
        logger = TensorBoardLogger(save_dir=str(out), name="tb", version="")
        fit = build_fit(cfg, callbacks=[*progress, interrupt], logger=logger)
        try:
            fit.run(resume=cfg.resume)
        except SIGTERMException:
            name = "SIGINT" if interrupt.signum == signal.SIGINT else "SIGTERM"
            raise FitInterrupted(
                f"stopped by {name} after step {fit.trainer.global_step}; its checkpoint is {last}: continue with "
                f"{resume_command(last)}",
                128 + (interrupt.signum or signal.SIGTERM),
            ) from None
    trainer = fit.trainer
    if trainer.checkpoint_callback is not None:  # last.ckpt holds the final step, as the maps do
        # a full checkpoint (optimizer and loop states, for resume=); saying so keeps Lightning from logging it
        trainer.save_checkpoint(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt", weights_only=False)
    if trainer.is_global_zero:
        print(outputs_table(out), flush=True)
    return out


def resume_command(checkpoint: Path) -> str:
    """The command line that continues this run from ``checkpoint``."""
    args = [a for a in _ARGV[1:] if not a.startswith(("resume=", "overwrite=", "hydra."))]
    return " ".join(["python -m lineas.train", *args, f"resume={checkpoint}"])


def outputs_table(out: Path) -> str:
    """What the run wrote under ``out``, with sizes."""
    rows = [
        ("maps", "maps", "the fitted maps (load_maps, generate/evaluate maps=)"),
        ("merged", "merged", "transformers checkpoint, maps folded in"),
        ("GGUF", "gguf/model.gguf", "the same for llama.cpp / Ollama"),
        ("evaluation", "eval/metrics.json", "toxicity and perplexity by strength (+ metrics.png)"),
        ("summary", "fit_summary.json", "held-out W2 per site before / after"),
        ("checkpoint", "checkpoints/last.ckpt", "resume=... to continue"),
        ("TensorBoard", "tb", "tensorboard --logdir ..."),
    ]
    lines = [f"\nrun written to {out}:"]
    for name, rel, what in rows:
        path = out / rel
        if path.exists():
            size = (
                sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
            )
            shown = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} KB"
            lines.append(f"  {name:<12} {str(path):<{len(str(out)) + 24}} {shown:>9}  {what}")
    return "\n".join(lines)


def _quiet_lightning() -> None:
    """Drop Lightning's advertisement and TPU lines from the log (what it says about GPUs stays)."""
    noise = ("💡 Tip", "TPU available")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith(noise)
    )


def _refuse_multirun_ddp(cfg: DictConfig) -> None:
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        strategy = str(cfg.trainer.get("strategy", "auto"))
        devices = cfg.trainer.get("devices", 1)
        if "ddp" in strategy or (isinstance(devices, int) and devices > 1):
            raise ConfigError(
                "Hydra multirun (-m) cannot be combined with multi-process DDP (a known upstream "
                "limitation): run one `python -m lineas.train ...` per setting instead, or use "
                "trainer.devices=1 for the sweep."
            )


_ARGV: list[str] = []  # the command line as given: Lightning's DDP launcher re-runs children with it


def _task(cfg: DictConfig) -> None:
    sys.argv = list(_ARGV)
    _refuse_multirun_ddp(cfg)
    train(cfg)


def _prepare(args: list[str]) -> tuple[list[str], ContextManager]:
    """Hydra's arguments (recipe files registered, output_dir as Hydra's dir) and the run's claim on its folder."""
    _quiet_lightning()
    _ARGV[:] = [sys.argv[0], *args]
    child = any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args)  # a DDP child
    claim = nullcontext() if child or PRINT_ONLY & set(args) else claim_output_dir(args)
    return _hydra_args(args), claim


main = hydra_entry("train", _task, prepare=_prepare, as_object=False)  # python -m lineas.train recipe=NAME ...


def claim_output_dir(args: list[str]) -> ContextManager:
    """The run's claim on ``output_dir=`` (see :class:`lineas.core.outputs.Output`), entered before Hydra writes
    there: a folder holding results is refused unless the run continues its own checkpoint (``resume=``) or
    replaces it (``overwrite=true``: a lineas run only, moved aside and removed when the new run ends well)."""
    given = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    if "output_dir" not in given:
        return nullcontext()  # the default output_dir is a new timestamped folder
    path = Path(given["output_dir"])
    resume = given.get("resume", "null")
    resume = None if resume in ("null", "None", "") else Path(resume)
    overwrite = given.get("overwrite", "false").lower() == "true"
    found = sorted(path.glob("checkpoints/last.ckpt")) + sorted(path.glob("*/checkpoints/last.ckpt"))
    hint = f"continue it with resume={found[0]}" if len(found) == 1 else "choose a new output_dir"
    if len(found) > 1:
        hint = f"continue its jobs with resume=DIR/checkpoints/last.ckpt, e.g. resume={found[0]}"
    continues = resume is not None and not overwrite and within(resume, path)
    return Output(
        path, "run", overwrite=overwrite, reads=[resume], startup=STARTUP, continues=continues, in_place=True, hint=hint
    )


def _hydra_args(args: list[str]) -> list[str]:
    """The arguments as Hydra should see them: recipe files registered, output_dir as Hydra's dir."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    has_dir = any(a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args)
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "recipe" and value.endswith((".yaml", ".yml")):
            arg = f"{key}={register_recipe_file(value)}"
        elif sep and key == "output_dir":
            if has_dir:
                continue  # a DDP child: Lightning passes the parent's hydra.run.dir
            arg = f"hydra.{'sweep' if multirun else 'run'}.dir={value}"
        out.append(arg)
    return out
