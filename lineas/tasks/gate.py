"""Fitting a per-token gate after the maps (post hoc DSAS), and measuring how much of the text it steers.

The probes see the base model's site outputs (no maps), pooled per prompt like the maps' own fit, for the
maps' source prompts against a neutral control set; each site is gated only where its probe separates
held-out prompts (:func:`lineas.core.gate.fit_gate`). The gate is then used per token on the live site
outputs, upstream maps included (a train / apply mismatch the DSAS reviewers note; see docs/gating.md).
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lineas.core.errors import ConfigError
from lineas.core.gate import Gate, fit_gate
from lineas.core.hooks import attach
from lineas.core.loss import Pooling, check_mask, pool
from lineas.core.maps import AffineMaps
from lineas.core.prompts import read_prompts
from lineas.core.sites import Site
from lineas.models.backbone import Backbone


def _batches(texts: Sequence[str], size: int) -> list[list[str]]:
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]


def _device(backbone: Backbone) -> torch.device:
    return next(backbone.model.parameters()).device


@torch.no_grad()
def site_samples(
    backbone: Backbone, sites: Sequence[Site], texts: Sequence[str], pooling: Pooling = "mean", batch_size: int = 32
) -> list[torch.Tensor]:
    """Per site, the pooled float32 outputs ``(N, D)`` of the base model (no maps) on ``texts``."""
    parts = []
    for chunk in _batches(texts, batch_size):
        batch = {k: v.to(_device(backbone)) for k, v in backbone.collate(chunk).items()}
        capture: dict[Site, torch.Tensor] = {}
        with attach(backbone.model, sites, capture=capture):
            backbone.forward(batch)
        mask = backbone.position_mask(batch)
        check_mask(mask)
        parts.append([pool(capture[s], mask, pooling).cpu() for s in sites])
    return [torch.cat(p) for p in zip(*parts)]


def fit_posthoc(
    backbone: Backbone,
    maps: AffineMaps,
    prompts: dict[str, dict[str, list[str]]],
    k: int = 5,
    l2: float = 1.0,
    threshold: float = 0.75,
    weak: str = "steer",
    pooling: Pooling = "mean",
    info: dict[str, Any] | None = None,
) -> Gate:
    """A gate for ``maps`` from ``prompts[side][split]`` (sides ``source``, ``control``; splits ``fit``,
    ``heldout``), fitted on the base model's activations (see :func:`lineas.core.gate.fit_gate`)."""
    samples = {
        (side, split): site_samples(backbone, maps.sites, prompts[side][split], pooling)
        for side in ("source", "control")
        for split in ("fit", "heldout")
    }
    counts = {f"{side}_{split}": len(prompts[side][split]) for side, split in samples}
    return fit_gate(
        maps.sites,
        samples["source", "fit"],
        samples["control", "fit"],
        samples["source", "heldout"],
        samples["control", "heldout"],
        k,
        l2,
        threshold,
        weak,
        info={"fit": "post_hoc", "pooling": pooling, "prompts": counts, **(info or {})},
    )


@torch.no_grad()
def mean_gate(
    backbone: Backbone,
    maps: AffineMaps,
    texts: Sequence[str],
    skip: Sequence[str] | None = None,
    strength: float = 1.0,
    batch_size: int = 32,
) -> float:
    """The share of ``texts``' tokens steered: the gate averaged over real tokens and over every site (a site
    steered without a gate counts 1, one turned off 0), with the maps live at ``strength``. With ``skip``
    (one prefix per text, e.g. its prompt), only the tokens after the prefix count (e.g. a continuation)."""
    if maps.gate is None:
        return 1.0
    total, count = 0.0, 0
    for n, chunk in enumerate(_batches(texts, batch_size)):
        batch = {k: v.to(_device(backbone)) for k, v in backbone.collate(chunk).items()}
        mask = backbone.position_mask(batch).clone()
        if skip is not None:
            prefixes = skip[n * batch_size : n * batch_size + len(chunk)]
            lengths = backbone.collate(list(prefixes))["attention_mask"].sum(1).to(mask.device)
            mask &= torch.arange(mask.shape[1], device=mask.device)[None, :] >= lengths[:, None]
        with maps.gate.recording() as record, maps.apply(backbone.model, strength):
            backbone.forward(batch)
        for values in record.values():
            g = values[-1].squeeze(-1)  # (B, T)
            total += float(g[mask].sum())
            count += int(mask.sum())
    return total / max(count, 1)


@torch.no_grad()
def token_gates(
    model: nn.Module, tokenizer: Any, text: str, gates: Sequence[Gate], steer: AbstractContextManager
) -> list[tuple[str, float]]:
    """Each token of ``text`` with its gate averaged over the gated sites of ``gates`` (their sites probed but
    not gated left out), the model run inside ``steer`` (the maps that carry the gates, live at their
    strengths); [] when no site is gated."""
    gated = [(n, i) for n, gate in enumerate(gates) for i, state in enumerate(gate.states) if state == "gated"]
    if not gated:
        return []
    ids = tokenizer(text, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    with ExitStack() as stack:
        records = [stack.enter_context(gate.recording()) for gate in gates]
        with steer:
            model(input_ids=ids)
    values = torch.stack([records[n][i][-1].reshape(-1) for n, i in gated]).mean(0)
    return [(tokenizer.decode(t), float(g)) for t, g in zip(ids[0].tolist(), values)]


def measure_texts(path: str, method: str | None, strength: float) -> tuple[list[str], list[str] | None]:
    """Texts to measure the gate on: a prompt file's lines, or a generations.jsonl's prompt + continuation rows
    at ``strength`` (and of ``method``), with their prompts as the prefixes not counted."""
    if not path.endswith(".jsonl"):
        return read_prompts(path), None
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    rows = [
        r
        for r in rows
        if "continuation" in r and r.get("strength") == strength and (method is None or r.get("method") == method)
    ]
    if not rows:
        raise ConfigError(
            f"{path}: no generated rows at strength {strength}{f' of method {method!r}' if method else ''}"
        )
    return [r["prompt"] + r["continuation"] for r in rows], [r["prompt"] for r in rows]


def format_sites(gate: Gate) -> str:
    """A Markdown table: site, state, held-out balanced accuracy of its probe."""
    lines = ["| site | state | held-out accuracy |", "|---|---|---|"]
    for s, state, acc in zip(gate.sites, gate.states, gate.accuracy):
        lines.append(f"| {s} | {state} | {'—' if acc is None else f'{acc:.3f}'} |")
    return "\n".join(lines)
