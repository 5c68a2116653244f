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
# Diffusers pipelines (lineas.pipelines.PipelineModules): the model_type is the pipeline family.
_UNET_NORMS = [r"unet\..*\.resnets\.\d+\.norm[12]", r"unet\..*\.transformer_blocks\.\d+\.norm[123]"]
_UNET = {
    "norms": _UNET_NORMS,
    "resnet_norms": _UNET_NORMS[:1],  # GroupNorm, 4-D: pooled over space
    "attn_norms": _UNET_NORMS[1:],  # LayerNorm over spatial tokens
}
# SD 1.x/2.x: the fitting forward has one timestep and fixed noise, and the prompt enters only by
# cross-attention, so the first resnet and the norms ahead of the first cross-attention see no prompt
# (their W2 is 0: a map there cannot steer). SDXL feeds the pooled prompt into the time embedding.
_PROMPT_FREE = r"(?!unet\.down_blocks\.0\.(resnets\.0\.|attentions\.0\.transformer_blocks\.0\.norm[12]$))"
_SD = {name: [_PROMPT_FREE + p for p in patterns] for name, patterns in _UNET.items()}
_CLIP_MLP_OUT = r"text_encoder\.(text_model\.)?encoder\.layers\.\d+\.mlp\.fc2"
PRESETS.update({
    "stable_diffusion": {**_SD, "text": [_CLIP_MLP_OUT]},
    "stable_diffusion_xl": {**_UNET, "text": [_CLIP_MLP_OUT, _CLIP_MLP_OUT.replace("text_encoder", "text_encoder_2", 1)]},
    "flux": {
        # to_out.0: image stream, to_add_out: text stream, single blocks' proj_out: both, concatenated
        "attn_out": [r"transformer\.transformer_blocks\.\d+\.attn\.(to_out\.0|to_add_out)",
                     r"transformer\.single_transformer_blocks\.\d+\.proj_out"],
        "ff_out": [r"transformer\.transformer_blocks\.\d+\.(ff|ff_context)\.net\.2"],
        # whole blocks, :0 text stream, :1 image stream: the residual stream, live maps only (no merge)
        "blocks": [r"transformer\.(single_)?transformer_blocks\.\d+:0", r"transformer\.(single_)?transformer_blocks\.\d+:1"],
        "text": [_CLIP_MLP_OUT],
    },
})
DEFAULT_PRESET = {"llama": "mlp_out", "gpt2": "mlp_out", "stable_diffusion": "norms",
                  "stable_diffusion_xl": "norms", "flux": "attn_out"}


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
