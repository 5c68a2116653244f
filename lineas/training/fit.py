"""``lineas.fit``: a fit as one function call with plain arguments, for notebooks and scripts; built as
``python -m lineas.train`` builds it (:func:`lineas.training.job.build_fit`, the base config without a recipe)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf

from lineas.core.errors import ConfigError
from lineas.core.loss import Pooling
from lineas.core.maps import AffineMaps
from lineas.core.outputs import Output
from lineas.core.sparsity import Sparsity
from lineas.models.backbone import Backbone
from lineas.training.job import build_fit, train_config
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
    # python -m lineas.train's base config without a recipe: the same trainer, callbacks and defaults
    cfg = train_config("~recipe")
    settings = {
        "output_dir": str(Path(output_dir).absolute()) if output_dir is not None else None,
        "seed": seed,
        "data.source": _listed(source),
        "data.target": _listed(target),
        "data.batch_size": batch_size,
        "data.num_fit": num_fit,
        "data.heldout_fraction": heldout_fraction,
        "module.sites": sites if isinstance(sites, str) else list(sites),
        "module.pooling": pooling,
        "module.lr": lr,
        "module.normalize": normalize,
        "module.shift": shift,
        "module.estimator": estimator,
        "module.checkpointing": checkpointing,
        "module.prefix_cache": prefix_cache,
        "module.clip": clip,
        "module.clip_quantiles": list(clip_quantiles),
        "module.control": _listed(control) if control is not None else None,
        "module.control_weight": control_weight,
        "trainer.max_steps": steps,
        "trainer.val_check_interval": max(1, steps // 4),
        "trainer.default_root_dir": None,
        "callbacks.checkpoint": None,
    }
    if isinstance(model, str):
        settings |= {"backbone.model": model, "backbone.dtype": dtype}
    if output_dir is None:  # nothing written: no summary, maps folder or logs
        settings |= {"callbacks.fit_summary": None, "callbacks.save_maps": None}
    for key, value in settings.items():
        OmegaConf.update(cfg, key, value, force_add=False)
    objects = {"optimizer": optimizer, "scheduler": scheduler, "sparsity": sparsity}
    logger = TensorBoardLogger(save_dir=str(output_dir), name="tb", version="") if output_dir is not None else False
    with claim:
        job = build_fit(
            cfg,
            backbone=model if not isinstance(model, str) else None,
            module_args={k: v for k, v in objects.items() if v is not None},
            callbacks=trainer_kwargs.pop("callbacks", ()),
            logger=trainer_kwargs.pop("logger", logger),
            trainer_args={"enable_checkpointing": False, **trainer_kwargs},
        )
        return job.run()


def _listed(prompts: str | Path | list[str]) -> str | list[str]:
    """A prompt file's path or the prompts, as a config holds them."""
    return str(prompts) if isinstance(prompts, (str, Path)) else list(prompts)
