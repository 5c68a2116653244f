"""``python -m lineas.gate``: fit a per-token gate for a maps folder (or measure the one it has), save it and
print its table (:mod:`lineas.tasks.gate`)."""

from __future__ import annotations

from typing import cast

from lineas.core.errors import ConfigError
from lineas.core.loss import Pooling
from lineas.datamodules import split_prompts
from lineas.models.causal_lm import CausalLM
from lineas.tasks.configs import GateConfig
from lineas.tasks.gate import fit_posthoc, format_sites, mean_gate, measure_texts
from lineas.tasks.steered import load_steering


def run_gate(cfg: GateConfig, prompts: dict[str, dict[str, list[str]]]) -> dict[str, float]:
    """What ``python -m lineas.gate`` does, with ``prompts[side][split]`` the source / control prompts split into
    fit / held out: fit the gate (unless ``cfg.fit`` is false), save the gated maps, print the per-site table and
    the mean gate on the held-out prompts and on each ``cfg.measure`` file; returns those means."""
    steering = load_steering(cfg.maps, None, gate=not cfg.fit)
    backbone = CausalLM(steering.spec, cfg.dtype, max_length=cfg.max_length)
    steering.check_against(backbone.model)
    maps = steering.maps
    usage: dict[str, float] = {}
    if cfg.fit:
        settings = {"source": cfg.source, "control": cfg.control, "num_fit": cfg.num_fit, "seed": cfg.seed}
        pooling = cast(Pooling, cfg.pooling)
        maps.gate = fit_posthoc(
            backbone, maps, prompts, cfg.components, cfg.l2, cfg.threshold, cfg.weak_sites, pooling, settings
        )
        for side in ("source", "control"):
            usage[f"{side} held out"] = mean_gate(backbone, maps, prompts[side]["heldout"], strength=cfg.strength)
        maps.gate.info["mean_gate"] = {"strength": cfg.strength, **usage}
        maps.save(cfg.output_dir or cfg.maps)
        print(format_sites(maps.gate))
        print(f"gated maps: {cfg.output_dir or cfg.maps}")
    elif maps.gate is None:
        raise ConfigError(f"{cfg.maps} holds no gate (gate.safetensors): fit one with fit=true")
    for path in cfg.measure:
        texts, skip = measure_texts(path, cfg.method, cfg.strength)
        usage[path] = mean_gate(backbone, maps, texts, skip, cfg.strength)
    for what, value in usage.items():
        print(f"mean gate (strength {cfg.strength:g}) on {what}: {value:.3f}")
    return usage


def run(cfg: GateConfig) -> dict[str, float]:
    """``python -m lineas.gate``: the source and control prompts split as the maps' fit split them, then
    :func:`run_gate`."""
    split = dict(num_fit=cfg.num_fit, seed=cfg.seed, text_field=cfg.text_field)
    return run_gate(
        cfg, {side: split_prompts(getattr(cfg, side), side=side, **split) for side in ("source", "control")}
    )
