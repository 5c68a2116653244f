"""``lineas.fit``: the training loop as one function call, for notebooks and scripts (no Hydra)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from lineas.callbacks import FitSummary, SaveMaps
from lineas.core.errors import ConfigError
from lineas.core.loss import Pooling
from lineas.core.maps import AffineMaps
from lineas.core.outputs import Output
from lineas.core.sparsity import Sparsity
from lineas.datamodules import PromptPairDataModule
from lineas.models.backbone import Backbone
from lineas.models.causal_lm import CausalLM
from lineas.training.module import LinEASModule, frozen_base_expected
from lineas.training.optim import OptimizerFactory, SchedulerFactory


def fit(
    model: str | Backbone,
    source: str | Path | list[str],
    target: str | Path | list[str],
    sites: str | Sequence[str] = "default",
    *,
    dtype: str = "float32",
    steps: int = 1000,
    lr: float = 1e-3,
    optimizer: OptimizerFactory | None = None,
    scheduler: SchedulerFactory | None = None,
    pooling: Pooling = "mean",
    sparsity: Sparsity | None = None,
    normalize: bool = False,
    shift: bool = True,
    estimator: str = "lineas",
    batch_size: int = 32,
    num_fit: int | None = None,
    heldout_fraction: float = 0.25,
    seed: int = 0,
    checkpointing: bool = False,
    prefix_cache: bool = False,
    clip: bool = False,
    clip_quantiles: Sequence[float] = (0.0, 100.0),
    control: str | Path | list[str] | None = None,
    control_weight: float = 1.0,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    **trainer_kwargs: Any,
) -> AffineMaps:
    """Fit LinEAS maps that move ``source`` prompts' activations towards ``target``'s.

    ``model`` is a model spec (hub id, folder, ``offline:...``, ``tiny:...``), loaded in ``dtype`` (``auto``:
    bfloat16 where the hardware computes it, as the default recipe), or a :class:`Backbone`;
    ``source``/``target`` are prompt files or lists; the other arguments are those of
    :class:`LinEASModule` and :class:`PromptPairDataModule` (``optimizer``, e.g.
    ``functools.partial(torch.optim.SGD, momentum=0.9)``, is called with the params and ``lr``; ``control``,
    prompts to keep unchanged, adds the control-preserving term with ``control_weight``).
    With ``output_dir``, the run writes the same ``maps/``, ``fit_summary.json`` and TensorBoard logs as
    ``python -m lineas.train``; a folder that holds files is refused unless ``overwrite`` (a lineas run only: it
    is replaced once this fit has ended well).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps={steps!r}: give a whole number of optimizer steps (0 or more)")
    if model is None or not (isinstance(model, str) or hasattr(model, "collate")):
        raise ConfigError(f"model={model!r}: give a model spec (hub id, folder, offline:..., tiny:...) or a Backbone")
    claim = Output(output_dir, "run", overwrite=overwrite, in_place=True) if output_dir is not None else nullcontext()
    if output_dir is not None:
        claim.check()  # refused before any model loads
    L.seed_everything(seed, verbose=False)
    backbone = CausalLM(model, dtype=dtype) if isinstance(model, str) else model
    datamodule = PromptPairDataModule(
        source,
        target,
        collate_fn=backbone.collate,
        batch_size=batch_size,
        num_fit=num_fit,
        heldout_fraction=heldout_fraction,
        seed=seed,
    )
    module = LinEASModule(
        backbone,
        sites=sites,
        pooling=pooling,
        lr=lr,
        optimizer=optimizer,
        scheduler=scheduler,
        sparsity=sparsity,
        normalize=normalize,
        shift=shift,
        estimator=estimator,
        checkpointing=checkpointing,
        prefix_cache=prefix_cache,
        clip=clip,
        clip_quantiles=clip_quantiles,
        control=control,
        control_weight=control_weight,
        control_seed=seed,
    )
    callbacks: list[L.Callback] = []
    logger: Any = False
    if output_dir is not None:
        out = Path(output_dir)
        callbacks = [FitSummary(out / "fit_summary.json"), SaveMaps(out / "maps")]
        logger = TensorBoardLogger(save_dir=str(out), name="tb", version="")
    trainer_kwargs = {
        "max_steps": steps,
        "max_epochs": -1,
        "logger": logger,
        "callbacks": callbacks,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,  # as in python -m lineas.train: the maps' size is in lineas.json
        "log_every_n_steps": 1,
        "check_val_every_n_epoch": None,
        "val_check_interval": max(1, steps // 4),
        **trainer_kwargs,
    }
    with claim, frozen_base_expected():
        L.Trainer(**trainer_kwargs).fit(module, datamodule=datamodule)
    return module.fitted_maps()
