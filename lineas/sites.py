"""Sites: the module outputs that carry a map, chosen by regex over ``named_modules()``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from torch import nn


@dataclass(frozen=True, order=True)
class Site:
    """A module's output, or item ``index`` of its tuple output (written ``name:index``)."""

    module: str
    index: int | None = None

    @classmethod
    def parse(cls, text: str | Site) -> Site:
        if isinstance(text, Site):
            return text
        name, sep, idx = text.rpartition(":")
        if sep and idx.isdigit():
            return cls(name, int(idx))
        return cls(text)

    def __str__(self) -> str:
        return self.module if self.index is None else f"{self.module}:{self.index}"


# Presets per `config.model_type`. Each names module outputs that fold into ordinary weights
# (LINEAS.md section 7): linear outputs with a bias home, and norms that feed only Linear layers.
PRESETS: dict[str, dict[str, list[str]]] = {
    "llama": {
        "mlp_out": [r"model\.layers\.\d+\.mlp\.down_proj"],
        "attn_out": [r"model\.layers\.\d+\.self_attn\.o_proj"],
        "attn_in": [r"model\.layers\.\d+\.input_layernorm"],
        "mlp_in": [r"model\.layers\.\d+\.post_attention_layernorm"],
    },
    "gpt2": {
        "mlp_out": [r"transformer\.h\.\d+\.mlp\.c_proj"],
        "attn_out": [r"transformer\.h\.\d+\.attn\.c_proj"],
        "attn_in": [r"transformer\.h\.\d+\.ln_1"],
        "mlp_in": [r"transformer\.h\.\d+\.ln_2"],
    },
    "qwen2": {
        "attn_in": [r"model\.layers\.\d+\.input_layernorm"],
    },
    "gemma2": {
        "attn_in": [r"model\.layers\.\d+\.input_layernorm"],
        "attn_out": [r"model\.layers\.\d+\.self_attn\.o_proj"],
    },
    "mistral": {
        "attn_in": [r"model\.layers\.\d+\.input_layernorm"],
        "mlp_in": [r"model\.layers\.\d+\.post_attention_layernorm"],
    },
    "phi3": {
        "attn_in": [r"model\.layers\.\d+\.input_layernorm"],
        "mlp_in": [r"model\.layers\.\d+\.post_attention_layernorm"],
    },
}
DEFAULT_PRESET = {"llama": "mlp_out", "gpt2": "mlp_out"}


class SiteError(ValueError):
    """A site specification that does not fit the model."""


def preset(model_type: str, name: str | None = None) -> list[str]:
    """Patterns of preset ``name`` (the family's default when None) for ``model_type``."""
    family = PRESETS.get(model_type)
    if family is None:
        raise SiteError(
            f"no site presets for model_type {model_type!r} (known: {sorted(PRESETS)}); "
            "pass regex patterns instead, e.g. sites=['model\\.layers\\.\\d+\\.input_layernorm']"
        )
    name = name or DEFAULT_PRESET.get(model_type, "attn_in")
    if name not in family:
        raise SiteError(f"no preset {name!r} for {model_type!r}; choose one of {sorted(family)}")
    return family[name]


def resolve_sites(model: nn.Module, spec: str | Sequence[str]) -> list[Site]:
    """Sites matched by ``spec``: a preset name (or "default"), or regex patterns (full match, ``:k``).

    Sites come back in module-definition order, without duplicates.
    """
    if isinstance(spec, str):
        model_type = getattr(getattr(model, "config", None), "model_type", "")
        is_preset = spec == "default" or spec in PRESETS.get(model_type, {})
        spec = preset(model_type, None if spec == "default" else spec) if is_preset else [spec]
    names = [n for n, _ in model.named_modules() if n]
    order = {n: i for i, n in enumerate(names)}
    found: set[Site] = set()
    for pattern in spec:
        site = Site.parse(pattern)
        try:
            regex = re.compile(site.module)
        except re.error as err:
            raise SiteError(f"site pattern {pattern!r} is not a valid regex: {err}") from None
        hits = [Site(n, site.index) for n in names if regex.fullmatch(n)]
        if not hits:
            sample = ", ".join(names[:: max(1, len(names) // 12)][:12])
            raise SiteError(
                f"site pattern {pattern!r} matches no module of {type(model).__name__}. "
                f"Patterns are full-match regexes over named_modules(), e.g. {sample}"
            )
        found.update(hits)
    return sorted(found, key=lambda s: (order[s.module], s.index or 0))
