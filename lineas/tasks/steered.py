"""What a task runs: maps on their base model, or a model alone (e.g. a merged checkpoint), checked once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lineas.core.errors import ConfigError, MapsFileError
from lineas.core.maps import AffineMaps, load_maps
from lineas.models.diffusion import is_pipeline
from lineas.models.sources import resolve


@dataclass
class Steering:
    """``maps`` (None: the model as it is) at ``strengths`` on the model of ``spec``."""

    spec: str
    maps: AffineMaps | None = None
    strengths: list[float] = field(default_factory=list)
    label: str | None = None  # the single column's name without maps: "merged" or "model"
    pipeline: bool = False  # a diffusers pipeline: images, not text


def _same_model(a: str | None, b: str) -> bool:
    """Whether two model specs name the same model (folders compared as resolved paths)."""
    return a == b or (
        a is not None and Path(a).is_dir() and Path(b).is_dir() and Path(a).resolve() == Path(b).resolve()
    )


def load_steering(maps: str | None, model: str | None, strengths: float | Sequence[float] = (1.0,)) -> Steering:
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
    fitted = load_maps(maps)
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
