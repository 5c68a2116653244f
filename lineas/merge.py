"""Folding affine maps into ordinary weights (LINEAS.md section 7).

With ``w, b`` the map's coefficients at the chosen strength, a site's output ``y`` becomes
``w*y + b``. That folds exactly into:

- the producing Linear ``y = Wx + c``: ``W' = diag(w) W``, ``c' = w*c + b`` (GPT-2's Conv1D likewise);
- a LayerNorm: ``gamma' = w*gamma``, ``bias' = w*bias + b`` (a GroupNorm's per-channel affine likewise);
- a Conv2d (diffusers UNets) per output channel, as a Linear;
- an RMSNorm ``y = g*n(x)``: ``g' = w*g`` (Gemma's ``(1+g)`` form: ``g' = w*(1+g) - 1``); its ``b``
  goes to the Linear layers that consume the norm's output: ``c' = c + W b``.

A Linear that needs a bias and has none gets one through its architecture's own config flag
(``attention_bias``, ``mlp_bias``), zero-filled wherever the flag adds a bias that had no value,
so the merged folder is an ordinary config of the same architecture. :func:`plan` checks every
site before :func:`merge_` changes any weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lineas.maps import AffineMaps
from lineas.sites import PRESETS, Site

_ATTN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
_MLP_IN = ["mlp.gate_proj", "mlp.up_proj"]

# Which Linear layers (relative to the decoder layer) consume each norm's output.
CONSUMERS: dict[str, dict[str, list[str]]] = {
    "llama": {"input_layernorm": _ATTN, "post_attention_layernorm": _MLP_IN},
    "mistral": {"input_layernorm": _ATTN, "post_attention_layernorm": _MLP_IN},
    "qwen2": {"input_layernorm": _ATTN, "post_attention_layernorm": _MLP_IN},
    "gemma2": {"input_layernorm": _ATTN, "pre_feedforward_layernorm": _MLP_IN},
    "phi3": {"input_layernorm": ["self_attn.qkv_proj"], "post_attention_layernorm": ["mlp.gate_up_proj"]},
    "gpt2": {"ln_1": ["attn.c_attn"], "ln_2": ["mlp.c_fc"]},
}
# Config flags that give Linear layers (by name suffix) a bias, per architecture.
BIAS_FLAGS: dict[str, dict[str, list[str]]] = {
    "llama": {"attention_bias": [*_ATTN, "self_attn.o_proj"],
              "mlp_bias": [*_MLP_IN, "mlp.down_proj"]},
    "gemma2": {"attention_bias": [*_ATTN, "self_attn.o_proj"]},
}


class MergeError(ValueError):
    """A site whose map cannot be folded into this model's weights."""


@dataclass
class MergePlan:
    """What :func:`merge_` will do: per site, how it folds; which bias flags it turns on."""

    folds: list[tuple[int, str]] = field(default_factory=list)  # (site index, "linear"|"layernorm"|"rmsnorm")
    flags: list[str] = field(default_factory=list)


def _is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D"


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.Conv2d)) or _is_conv1d(m)


def _is_affine_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None and m.bias is not None


def _out_dim(m: nn.Module) -> int | None:
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.Conv2d):
        return m.out_channels
    if _is_conv1d(m):
        return m.nf
    weight = getattr(m, "weight", None)
    return weight.numel() if isinstance(weight, torch.Tensor) and weight.ndim == 1 else None


def _is_rmsnorm(m: nn.Module) -> bool:
    return type(m).__name__.endswith("RMSNorm") and getattr(m, "weight", None) is not None


def _gemma_form(m: nn.Module) -> bool:
    return type(m).__name__.startswith("Gemma")


def _flag_for(model_type: str, name: str) -> str | None:
    for flag, suffixes in BIAS_FLAGS.get(model_type, {}).items():
        if any(name.endswith("." + s) for s in suffixes):
            return flag
    return None


def _nearest_preset(model_type: str) -> str:
    names = sorted(PRESETS.get(model_type, {}))
    return f"presets for {model_type}: {names}" if names else "choose Linear or norm outputs"


def check_unclipped(maps: AffineMaps) -> None:
    """Refuse clipped maps: a map applied only inside bounds is piecewise and folds into no weight."""
    if maps.clipped:
        raise MergeError(
            "these maps are clipped to the source's range (Linear-AcT's support clip): a piecewise map cannot "
            "fold into weights. Use them live (maps.apply, or generate / evaluate with maps=DIR), or refit "
            "with module.clip=false for a mergeable, unclipped map.")


def consumers(model: nn.Module, site: Site) -> list[str]:
    """Names of the Linear layers fed by a norm site (empty if unknown)."""
    model_type = model.config.model_type
    parent, _, leaf = site.module.rpartition(".")
    return [f"{parent}.{s}" for s in CONSUMERS.get(model_type, {}).get(leaf, [])]


def plan(model: nn.Module, maps: AffineMaps, strength: float | None = None) -> MergePlan:
    """Check that every site of ``maps`` folds into ``model``; raise :class:`MergeError` otherwise."""
    check_unclipped(maps)
    modules = dict(model.named_modules())
    model_type = model.config.model_type
    out = MergePlan()

    def need_bias(name: str, site: Site, why: str) -> None:
        if getattr(modules[name], "bias", None) is not None:
            return
        flag = _flag_for(model_type, name)
        if flag is None:
            raise MergeError(
                f"site {site}: {why} needs a bias on {name}, and {model_type} has no config flag for one. "
                f"Fit this site with shift disabled (module.shift=false: scale-only maps fold into weights), "
                f"or pick other sites ({_nearest_preset(model_type)}).")
        if flag not in out.flags:
            out.flags.append(flag)

    for i, site in enumerate(maps.sites):
        m = modules.get(site.module)
        if m is None:
            raise MergeError(f"site {site}: no such module in {type(model).__name__}; were the maps fitted on another model?")
        size = _out_dim(m)
        if size is not None and size != maps.dims[i]:
            raise MergeError(f"site {site}: the maps have {maps.dims[i]} dims but {site.module} outputs {size}; "
                             "were the maps fitted on another model?")
        _, b = maps.coefficients(i, strength)
        has_shift = bool(b.detach().abs().max() > 0)
        if site.index is not None:
            kind = None
        elif _is_linear(m):
            kind = "linear"
            if has_shift:
                need_bias(site.module, site, "the shift beta")
        elif _is_affine_norm(m):
            kind = "layernorm"
        elif _is_rmsnorm(m):
            kind = "rmsnorm"
            if has_shift:
                targets = consumers(model, site)
                if not targets:
                    raise MergeError(
                        f"site {site}: an RMSNorm's shift beta has no home unless the norm feeds only Linear "
                        f"layers, and lineas does not know the consumers of {site.module} in {model_type}; "
                        f"fit it with module.shift=false or pick other sites ({_nearest_preset(model_type)}).")
                for name in targets:
                    need_bias(name, site, "the RMSNorm shift beta")
        else:
            kind = None
        if kind is None:
            raise MergeError(
                f"site {site} ({type(m).__name__}) cannot be merged: only Linear, Conv2d, LayerNorm, GroupNorm "
                f"and RMSNorm outputs fold into weights (a whole decoder layer's or transformer block's output is "
                f"the residual stream, which no single weight produces). Nearest mergeable: "
                f"{_nearest_preset(model_type)}.")
        out.folds.append((i, kind))
    return out


@torch.no_grad()
def merge_(model: nn.Module, maps: AffineMaps, strength: float | None = None) -> MergePlan:
    """Fold ``maps`` at ``strength`` into ``model``'s weights in place; returns the plan applied."""
    p = plan(model, maps, strength)
    modules = dict(model.named_modules())
    for flag in p.flags:
        setattr(model.config, flag, True)
        for name, m in modules.items():
            if _flag_for(model.config.model_type, name) == flag and m.bias is None:
                m.bias = nn.Parameter(torch.zeros(m.out_features, dtype=m.weight.dtype, device=m.weight.device),
                                      requires_grad=False)
    for i, kind in p.folds:
        site = maps.sites[i]
        m = modules[site.module]
        w, b = (t.detach().float().to(m.weight.device) for t in maps.coefficients(i, strength))
        if kind == "linear":
            weight = m.weight.float()
            weight = weight * w if _is_conv1d(m) else weight * w.view(-1, *[1] * (weight.ndim - 1))
            m.weight.copy_(weight)
            if m.bias is not None:
                m.bias.copy_(m.bias.float() * w + b)
        elif kind == "layernorm":
            m.weight.copy_(m.weight.float() * w)
            m.bias.copy_(m.bias.float() * w + b)
        else:
            g = m.weight.float()
            m.weight.copy_(w * (1 + g) - 1 if _gemma_form(m) else w * g)
            if b.abs().max() > 0:
                for name in consumers(model, site):
                    c = modules[name]
                    shift = b @ c.weight.float() if _is_conv1d(c) else c.weight.float() @ b
                    c.bias.copy_(c.bias.float() + shift)
    return p
