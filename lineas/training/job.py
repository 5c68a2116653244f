"""One fit, built from a composed train config: the backbone, datamodule, module and trainer that
``python -m lineas.train``, :func:`lineas.fit` and the benchmarks run. They are assembled here only."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import lightning as L
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, ValidationError, open_dict
from omegaconf.errors import ConfigKeyError

from lineas.conf import register
from lineas.core.errors import ConfigError, user_error
from lineas.core.maps import AffineMaps
from lineas.models.backbone import Backbone
from lineas.tasks.configs import TrainConfig, TrainerSettings
from lineas.training.module import LinEASModule, frozen_base_expected
from lineas.training.optim import check_lr

Stage = Callable[[str], AbstractContextManager]
WANTED = {"Integer": "give a whole number", "Float": "give a number", "bool": "give true or false"}
TRAINER_KEYS = {f.name for f in fields(TrainerSettings)}  # typed; any other Trainer argument passes as it is


def train_config(*overrides: str) -> DictConfig:
    """The config ``python -m lineas.train`` composes for ``overrides`` (give ``output_dir=``: outside a Hydra
    run there is no run folder to default to)."""
    register()
    # Hydra allows one initialised config search at a time: inside someone else's Hydra app, set theirs aside
    theirs = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("lineas.conf", version_base="1.3"):
            return compose("train", overrides=list(overrides))
    finally:
        if theirs is not None:  # the context above restores the state it found, a cleared one
            GlobalHydra.instance().initialize(theirs)


def check_config(cfg: DictConfig) -> DictConfig:
    """The composed config typed by its schema (:class:`~lineas.tasks.configs.TrainConfig`); a value of the wrong
    type, or a setting a fit cannot use, is refused in one line."""
    given = cfg.copy()
    with open_dict(given):
        other = {k: given.trainer.pop(k) for k in list(given.trainer) if k not in TRAINER_KEYS}  # Lightning checks
    try:
        typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), given)
    except ValidationError as err:
        value = OmegaConf.select(cfg, err.full_key, throw_on_missing=False)
        wanted = next((w for t, w in WANTED.items() if t in str(err.msg)), str(err.msg).splitlines()[0])
        raise ConfigError(f"{err.full_key}={value!r}: {wanted}") from None
    except ConfigKeyError as err:
        raise ConfigError(f"{err.full_key}: lineas.train has no such setting (its keys: --cfg job)") from None
    cfg = OmegaConf.create(OmegaConf.to_container(typed))  # the typed values, open again for the other arguments
    cfg.trainer.update(other)
    steps = cfg.trainer.max_steps
    if steps < -1:
        raise ConfigError(f"trainer.max_steps={steps}: give a whole number of optimizer steps (-1: no limit)")
    if steps == -1 and cfg.trainer.get("max_epochs", -1) in (-1, None):
        raise ConfigError("trainer.max_steps=-1 (no step limit) needs trainer.max_epochs >= 1: the fit would not end")
    check_lr(cfg.module.get("lr", 1e-3))
    if OmegaConf.is_missing(cfg.data, "source") or OmegaConf.is_missing(cfg.data, "target"):
        raise ConfigError("data.source and data.target are required: give both prompt files (e.g. in the recipe)")
    return cfg


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` with plain lists and dicts as arguments, raising a user error of the target
    as itself (Hydra wraps it)."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = user_error(err)
        if cause is None:
            raise
        raise cause from None


@dataclass
class Fit:
    """The parts of one fit, ready to run."""

    backbone: Backbone
    datamodule: L.LightningDataModule
    module: LinEASModule
    trainer: L.Trainer

    def run(self, resume: str | Path | None = None) -> AffineMaps:
        """Fit the maps (continuing the checkpoint ``resume``, if given); returns them."""
        with frozen_base_expected():
            self.trainer.fit(self.module, datamodule=self.datamodule, ckpt_path=resume)
        return self.module.fitted_maps()


def build_fit(
    cfg: DictConfig,
    *,
    backbone: Backbone | None = None,
    data_args: Mapping[str, Any] | None = None,
    module_args: Mapping[str, Any] | None = None,
    trainer_args: Mapping[str, Any] | None = None,
    callbacks: Sequence[L.Callback] = (),
    logger: Any = False,
    stage: Stage = lambda name: nullcontext(),
) -> Fit:
    """Seed, then build ``cfg``'s backbone, datamodule, module, callbacks and trainer.

    ``backbone`` replaces the config's; ``data_args``, ``module_args`` and ``trainer_args`` are keyword arguments
    that override those nodes (objects a config cannot hold: prompt lists, optimizer partials); ``callbacks`` are
    added to the config's; ``stage(name)`` wraps the building of each part (the benchmarks time them).
    """
    cfg = check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    with stage("model load"):
        backbone = backbone if backbone is not None else build(cfg.backbone)
    with stage("data"):
        datamodule = build(cfg.data, collate_fn=backbone.collate, **(data_args or {}))
    with stage("module set-up (site probe)"):
        module = build(cfg.module, backbone=backbone, **(module_args or {}))
    listed = [build(c) for c in cfg.callbacks.values() if c is not None]
    trainer = instantiate(cfg.trainer, callbacks=[*listed, *callbacks], logger=logger, **(trainer_args or {}))
    return Fit(backbone, datamodule, module, trainer)
