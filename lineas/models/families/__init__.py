"""The model families lineas knows, one table each (presets and fold rules), and what is asked of them:
the sites of a preset, the fold rules of a model, and whether maps were fitted on this kind of model."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from lineas.core.errors import MapsFileError, SiteError
from lineas.core.merge import FoldRules
from lineas.core.sites import Site, match_sites
from lineas.models.families.flux import FLUX
from lineas.models.families.gemma2 import GEMMA2
from lineas.models.families.gpt2 import GPT2
from lineas.models.families.llama import LLAMA, MISTRAL, QWEN2
from lineas.models.families.phi3 import PHI3
from lineas.models.families.unet import STABLE_DIFFUSION, STABLE_DIFFUSION_XL
from lineas.models.family import Family

FAMILIES: dict[str, Family] = {
    f.model_type: f for f in (LLAMA, GPT2, QWEN2, GEMMA2, MISTRAL, PHI3, STABLE_DIFFUSION, STABLE_DIFFUSION_XL, FLUX)
}
PRESETS: dict[str, dict[str, list[str]]] = {t: f.presets for t, f in FAMILIES.items()}


def model_type_of(model: Any) -> str:
    """``model.config.model_type`` ("" when the model has none)."""
    return getattr(getattr(model, "config", None), "model_type", "") or ""


def preset(model_type: str, name: str | None = None) -> list[str]:
    """Patterns of preset ``name`` (the family's default when None) for ``model_type``."""
    family = FAMILIES.get(model_type)
    if family is None:
        raise SiteError(
            f"no site presets for model_type {model_type!r} (known: {sorted(FAMILIES)}); "
            "pass regex patterns instead, e.g. sites=['model\\.layers\\.\\d+\\.input_layernorm']"
        )
    name = name or family.default_preset
    if name not in family.presets:
        raise SiteError(f"no preset {name!r} for {model_type!r}; choose one of {sorted(family.presets)}")
    return family.presets[name]


def resolve_sites(model: nn.Module, spec: str | Sequence[str]) -> list[Site]:
    """Sites of ``spec``: a preset name of the model's family (or "default"), or regex patterns
    (full match over ``named_modules()``, ``:k`` for item k of a tuple output)."""
    if isinstance(spec, str):
        model_type = model_type_of(model)
        is_preset = spec == "default" or spec in PRESETS.get(model_type, {})
        if not is_preset and spec.isidentifier() and not any(n.endswith(spec) for n, _ in model.named_modules()):
            known = sorted(PRESETS.get(model_type, {})) or "none"
            raise SiteError(
                f"sites={spec!r} is neither a preset of {model_type or type(model).__name__} "
                f"(presets: {known}) nor a module name; give a preset or regex patterns over named_modules()"
            )
        spec = preset(model_type, None if spec == "default" else spec) if is_preset else [spec]
    return match_sites(model, spec)


def fold_rules(model: nn.Module) -> FoldRules:
    """The fold rules of ``model``'s family (generic rules for an unknown family)."""
    family = FAMILIES.get(model_type_of(model))
    return family.rules if family is not None else FoldRules()


def check_fitted_on(info: dict[str, Any], model: Any, spec: str) -> None:
    """Refuse maps whose info says they were fitted on another kind of model than ``model`` (from ``spec``)."""
    fitted_on, model_type = info.get("model_type"), model_type_of(model)
    if fitted_on and model_type and fitted_on != model_type:
        raise MapsFileError(
            f"the maps were fitted on a {fitted_on} model ({info.get('base_model')}); "
            f"{spec} is a {model_type} model. Give model= a {fitted_on} model, or maps fitted on {spec}"
        )
