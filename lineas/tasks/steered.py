"""What a task runs: maps on their base model, or a model alone (e.g. a merged checkpoint): read, and checked
against the model once it is loaded, here only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lineas.core.errors import ConfigError, MapsFileError
from lineas.core.maps import AffineMaps, load_maps
from lineas.models.causal_lm import load_causal_lm
from lineas.models.diffusion import PipelineModules, is_pipeline, load_pipeline
from lineas.models.families import check_fitted_on
from lineas.models.sources import resolve


@dataclass
class Steering:
    """``maps`` (None: the model as it is) at ``strengths`` on the model of ``spec``."""

    spec: str
    maps: AffineMaps | None = None
    strengths: list[float] = field(default_factory=list)
    label: str | None = None  # the single column's name without maps: "merged" or "model"
    pipeline: bool = False  # a diffusers pipeline: images, not text

    def causal_lm(self, dtype: str | torch.dtype = "float32", device: str | None = None) -> tuple[nn.Module, Any]:
        """The model and its tokenizer, with the maps checked against it and moved to its device."""
        model, tokenizer = load_causal_lm(self.spec, dtype, device)
        self.check_against(model)
        return model, tokenizer

    def diffusion_pipeline(self, dtype: str | torch.dtype = "float32", device: str | None = None) -> Any:
        """The pipeline, on ``device``, with the maps checked against it and moved there."""
        pipe = load_pipeline(self.spec, dtype).to(device or "cpu")
        self.check_against(PipelineModules(pipe))
        return pipe

    def check_against(self, model: nn.Module) -> None:
        """Refuse maps fitted on another kind of model than ``model``; move them to its device."""
        if self.maps is not None:
            check_fitted_on(self.maps.info, model, self.spec)
            self.maps.to(next(model.parameters()).device)


def _same_model(a: str | None, b: str) -> bool:
    """Whether two model specs name the same model (folders compared as resolved paths)."""
    return a == b or (
        a is not None and Path(a).is_dir() and Path(b).is_dir() and Path(a).resolve() == Path(b).resolve()
    )


def load_steering(
    maps: str | Path | None, model: str | None, strengths: float | Sequence[float] = (1.0,), gate: bool = True
) -> Steering:
    """Read the maps folder ``maps`` and find their base model (``model`` overrides it), or take ``model`` alone.

    Refuses: neither given; maps that do not name their base model; maps given with a merged checkpoint
    (the maps are already in its weights).
    """
    if maps is None and model is None:
        raise ConfigError(
            "give maps=DIR (steered, one column per strength) or model=FOLDER_OR_SPEC (the model as it is)"
        )
    if maps is None:
        label = "merged" if resolve(model).merge_record is not None else "model"
        return Steering(model, label=label, pipeline=is_pipeline(model))
    fitted = load_maps(maps, gate=gate)
    spec = model or fitted.info.get("base_model")
    if spec is None:
        raise MapsFileError(f"{maps}: the maps do not name their base model; pass model=ID_OR_PATH")
    if resolve(spec).merge_record is not None and not _same_model(fitted.info.get("base_model"), spec):
        raise ConfigError(
            f"{spec} is a merged checkpoint and the maps were fitted on {fitted.info.get('base_model')}: maps of "
            f"its base are already in its weights. Give maps= with their base model, or model={spec} alone"
        )
    lams = [float(s) for s in strengths] if isinstance(strengths, Sequence) else [float(strengths)]
    return Steering(spec, fitted, lams, pipeline=is_pipeline(spec, fitted.info.get("model_type")))


def one_base_model(steerings: Sequence[Steering], folders: Sequence[str | Path]) -> str:
    """The base model that all ``steerings`` run on; refuses maps fitted on different ones."""
    specs = {s.spec for s in steerings}
    if len(specs) != 1:
        named = ", ".join(f"{f}: {s.spec}" for f, s in zip(folders, steerings))
        raise ConfigError(
            f"the maps were fitted on different base models ({named}): give maps of one model (or model=...)"
        )
    return specs.pop()
