"""LinEAS: end-to-end linear activation steering on PyTorch Lightning.

Notebook use, no Hydra needed::

    import lineas
    toxic, calm = lineas.data_path("toxicity/toxic.txt"), lineas.data_path("toxicity/nontoxic.txt")
    maps = lineas.fit("offline:smollm2-135m-instruct", toxic, calm, sites="mlp_out")
    with maps.apply(model, strength=0.5):
        model.generate(...)
    maps.save("my_maps"); maps = lineas.load_maps("my_maps")
    lineas.compose(maps=["less_toxic", "more_positive"], strengths=[1.0, 0.5], output_dir="both")

The names below load on first use: ``import lineas`` alone imports neither torch nor Lightning.
Layers (imports point down only): entry points ``lineas.train|export|generate|evaluate|compare|gate|demo|compose`` ->
``lineas.cli`` (Hydra) -> ``lineas.training`` (Lightning) -> ``lineas.callbacks`` -> ``lineas.datamodules``
-> ``lineas.tasks`` -> ``lineas.metrics`` -> ``lineas.models`` -> ``lineas.core`` (torch only).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AffineMaps": "lineas.core.maps",
    "load_maps": "lineas.core.maps",
    "Gate": "lineas.core.gate",
    "fit_gate": "lineas.core.gate",
    "Site": "lineas.core.sites",
    "attach": "lineas.core.hooks",
    "pool": "lineas.core.loss",
    "sorted_w2": "lineas.core.loss",
    "Sparsity": "lineas.core.sparsity",
    "merge_": "lineas.core.merge",
    "LineasError": "lineas.core.errors",
    "ConfigError": "lineas.core.errors",
    "SiteError": "lineas.core.errors",
    "MapsFileError": "lineas.core.errors",
    "MergeError": "lineas.core.errors",
    "PromptFileError": "lineas.core.errors",
    "ModelSourceError": "lineas.core.errors",
    "FitError": "lineas.core.errors",
    "read_prompts": "lineas.core.prompts",
    "data_path": "lineas.core.files",
    "PRESETS": "lineas.models.families",
    "resolve_sites": "lineas.models.families",
    "fold_rules": "lineas.models.families",
    "resolve_model": "lineas.models.sources",
    "CausalLM": "lineas.models.causal_lm",
    "load_causal_lm": "lineas.models.causal_lm",
    "DiffusionPipe": "lineas.models.diffusion",
    "Sampling": "lineas.tasks.configs",
    "export_merged": ("lineas.tasks.export", "export"),
    "compose": ("lineas.tasks.compose", "compose"),
    "generate_text": ("lineas.tasks.generate", "generate"),
    "LinEASModule": "lineas.training.module",
    "fit": "lineas.training.fit",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'lineas' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
