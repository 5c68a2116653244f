"""Folding affine maps into ordinary weights (docs/method.md#merging-into-weights).

With ``w, b`` the map's coefficients at the chosen strength, a site's output ``y`` becomes
``w*y + b``. That folds exactly into:

- the producing Linear ``y = Wx + c``: ``W' = diag(w) W``, ``c' = w*c + b`` (GPT-2's Conv1D likewise);
- a LayerNorm: ``gamma' = w*gamma``, ``bias' = w*bias + b`` (a GroupNorm's per-channel affine likewise);
- a Conv2d (diffusers UNets) per output channel, as a Linear;
- a weight shared with another module (an LM head tied to the input embedding) is untied first, and the
  config says so (``tie_word_embeddings=false``), so that the fold changes the head alone;
- an RMSNorm ``y = g*n(x)``: ``g' = w*g`` (Gemma's ``(1+g)`` form: ``g' = w*(1+g) - 1``); its ``b``
  goes to the Linear layers that consume the norm's output: ``c' = c + W b``.

A Linear that needs a bias and has none gets one through its architecture's own config flag
(``attention_bias``, ``mlp_bias``), zero-filled wherever the flag adds a bias that had no value,
so the merged folder is an ordinary config of the same architecture. :func:`plan` checks every
site before :func:`merge_` changes any weight. What is architecture-specific (which Linear layers read
a norm, which flags add biases, Gemma's ``(1+g)``) comes in as :class:`FoldRules`, from the family tables
of :mod:`lineas.models.families`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lineas.core.errors import MergeError
from lineas.core.maps import AffineMaps
from lineas.core.sites import Site


@dataclass(frozen=True)
class FoldRules:
    """What the fold needs to know of an architecture beyond its module types (a family's table).

    ``consumers``: per norm (leaf name), the Linear layers (relative to the norm's parent) that read its
    output, the home of an RMSNorm's shift. ``bias_flags``: per config flag, the Linear layers (name
    suffixes) it gives a bias. ``rmsnorm_offset``: an RMSNorm scales by ``offset + g`` (Gemma: 1).
    ``hint``: the mergeable sites to suggest in errors.
    """

    consumers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    bias_flags: Mapping[str, Sequence[str]] = field(default_factory=dict)
    rmsnorm_offset: float = 0.0
    hint: str = "choose Linear or norm outputs"

    def flag_for(self, name: str) -> str | None:
        """The config flag that gives Linear ``name`` a bias (None: no flag does)."""
        for flag, suffixes in self.bias_flags.items():
            if any(name.endswith("." + s) for s in suffixes):
                return flag
        return None

    def consumers_of(self, site: Site) -> list[str]:
        """Names of the Linear layers fed by a norm site (empty if unknown)."""
        parent, _, leaf = site.module.rpartition(".")
        return [f"{parent}.{s}" for s in self.consumers.get(leaf, [])]


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


def check_unclipped(maps: AffineMaps) -> None:
    """Refuse clipped or gated maps: a map applied only inside bounds is piecewise, and a per-token gate
    depends on the input; neither folds into a weight."""
    if maps.gated:
        raise MergeError(
            "these maps carry a per-token gate (gate.safetensors): it depends on the input, so it folds into no "
            "weight. Use them live (generate / evaluate / compare maps=DIR), or export the ungated maps: "
            "ungated=true (Python: load_maps(DIR, gate=False)) or a copy of DIR without gate.safetensors, gate.json."
        )
    if maps.clipped:
        raise MergeError(
            "these maps are clipped to the source's range (Linear-AcT's support clip): a piecewise map cannot "
            "fold into weights. Use them live (maps.apply, or generate / evaluate with maps=DIR), or refit "
            "with module.clip=false for a mergeable, unclipped map."
        )


def _fold_kind(site: Site, m: nn.Module) -> str | None:
    """How the output of ``m`` folds: "linear", "layernorm", "rmsnorm", or None (no single weight makes it)."""
    if site.index is not None:
        return None
    if _is_linear(m):
        return "linear"
    if _is_affine_norm(m):
        return "layernorm"
    return "rmsnorm" if _is_rmsnorm(m) else None


def _shift_homes(site: Site, kind: str, rules: FoldRules, model_type: str) -> list[str]:
    """The Linear layers whose biases take the site's shift: the site itself, or an RMSNorm's consumers."""
    if kind == "linear":
        return [site.module]
    if kind == "layernorm":
        return []
    homes = rules.consumers_of(site)
    if not homes:
        raise MergeError(
            f"site {site}: an RMSNorm's shift beta has no home unless the norm feeds only Linear layers, and lineas "
            f"does not know the consumers of {site.module} in {model_type}; fit it with module.shift=false or pick "
            f"other sites ({rules.hint})."
        )
    return homes


def plan(model: nn.Module, maps: AffineMaps, rules: FoldRules, strength: float | None = None) -> MergePlan:
    """Check that every site of ``maps`` folds into ``model``; raise :class:`MergeError` otherwise."""
    check_unclipped(maps)
    modules = dict(model.named_modules())
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    out = MergePlan()
    for i, site in enumerate(maps.sites):
        m = modules.get(site.module)
        if m is None:
            raise MergeError(
                f"site {site}: no such module in {type(model).__name__}; were the maps fitted on another model?"
            )
        size = _out_dim(m)
        if size is not None and size != maps.dims[i]:
            raise MergeError(
                f"site {site}: the maps have {maps.dims[i]} dims but {site.module} outputs {size}; "
                "were the maps fitted on another model?"
            )
        kind = _fold_kind(site, m)
        if kind is None:
            raise MergeError(
                f"site {site} ({type(m).__name__}) cannot be merged: only Linear, Conv2d, LayerNorm, GroupNorm and "
                f"RMSNorm outputs fold into weights (a whole decoder layer's or transformer block's output is the "
                f"residual stream, which no single weight produces). Nearest mergeable: {rules.hint}."
            )
        if bool(maps.coefficients(i, strength)[1].detach().abs().max() > 0):
            for name in _shift_homes(site, kind, rules, model_type):
                if getattr(modules[name], "bias", None) is not None:
                    continue
                flag = rules.flag_for(name)
                if flag is None:
                    raise MergeError(
                        f"site {site}: the shift beta needs a bias on {name}, and {model_type} has no config flag "
                        f"for one. Fit this site with shift disabled (module.shift=false: scale-only maps fold into "
                        f"weights), or pick other sites ({rules.hint})."
                    )
                if flag not in out.flags:
                    out.flags.append(flag)
        out.folds.append((i, kind))
    return out


def _untie(model: nn.Module, m: nn.Module) -> None:
    """Give ``m`` its own weight if it shares it (an LM head tied to the input embedding), so that folding a map
    into it leaves the embedding alone; the model's config then says the weights are not tied."""
    if sum(p is m.weight for _, p in model.named_parameters(remove_duplicate=False)) < 2:
        return
    m.weight = nn.Parameter(m.weight.detach().clone(), requires_grad=False)
    config = getattr(model, "config", None)
    if getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False


@torch.no_grad()
def merge_(model: nn.Module, maps: AffineMaps, rules: FoldRules, strength: float | None = None) -> MergePlan:
    """Fold ``maps`` at ``strength`` into ``model``'s weights in place; returns the plan applied."""
    p = plan(model, maps, rules, strength)
    modules = dict(model.named_modules())
    for flag in p.flags:
        setattr(model.config, flag, True)
        for name, m in modules.items():
            if rules.flag_for(name) == flag and m.bias is None:
                m.bias = nn.Parameter(
                    torch.zeros(m.out_features, dtype=m.weight.dtype, device=m.weight.device), requires_grad=False
                )
    for i, kind in p.folds:
        site = maps.sites[i]
        m = modules[site.module]
        w, b = (t.detach().float().to(m.weight.device) for t in maps.coefficients(i, strength))
        _untie(model, m)
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
            g = m.weight.float() + rules.rmsnorm_offset
            m.weight.copy_(w * g - rules.rmsnorm_offset)
            if b.abs().max() > 0:
                for name in rules.consumers_of(site):
                    c = modules[name]
                    shift = b @ c.weight.float() if _is_conv1d(c) else c.weight.float() @ b
                    c.bias.copy_(c.bias.float() + shift)
    return p
