"""``python -m lineas.generate``: continuations (or, for a pipeline, an image grid) at each strength, printed and
written (:mod:`lineas.tasks.generate`, :mod:`lineas.tasks.images`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from lineas.core.files import write_jsonl
from lineas.core.outputs import Output
from lineas.core.prompts import read_prompts
from lineas.models.sources import resolve
from lineas.tasks.configs import GenerateConfig, check_strengths
from lineas.tasks.generate import check_device, generate
from lineas.tasks.images import grid, grid_output, render, save_png
from lineas.tasks.steered import Steering, load_steering
from lineas.tasks.tables import format_table, generations_file, log_tensorboard


def run_generate(cfg: GenerateConfig) -> list[dict[str, Any]]:
    """What ``python -m lineas.generate`` does: the table on stdout, the rows as JSON lines (and
    TensorBoard text); maps of a pipeline (or a pipeline folder) give an image grid instead."""
    cfg.sampling.check()
    check_strengths(cfg.strengths)
    device = check_device(cfg.device)
    prompts = read_prompts(cfg.prompts, cfg.text_field)
    steering = load_steering(cfg.maps, cfg.model, cfg.strengths)
    if steering.pipeline:
        grid_output(cfg).check()
        return run_images(cfg, steering, prompts, device)
    output = Output(cfg.output, "generations", overwrite=cfg.overwrite, what="output", ours=generations_file)
    if cfg.output:
        output.check()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model, tokenizer = steering.causal_lm(cfg.dtype, device)
    rows = generate(
        model,
        tokenizer,
        prompts,
        steering.maps,
        steering.strengths,
        cfg.sampling,
        progress=cfg.progress,
        label=steering.label,
    )
    record = resolve(steering.spec).merge_record
    for r in rows if record is not None else []:
        r["strength"] = record.get("strength")
    print(format_table(rows), flush=True)
    if cfg.output:
        with output:
            print(f"\nwrote {write_jsonl(cfg.output, rows)} ({len(rows)} rows)")
    if cfg.tb_dir:
        log_tensorboard(cfg.tb_dir, rows, config=asdict(cfg))
        print(f"TensorBoard text: {cfg.tb_dir} (tag 'generations')")
    return rows


def run_images(cfg: GenerateConfig, steering: Steering, prompts: list[str], device: str) -> list[dict[str, Any]]:
    """``python -m lineas.generate`` on a pipeline: one grid PNG, and one row per prompt x seed x column."""
    pipe = steering.diffusion_pipeline(cfg.dtype, device)
    maps = steering.maps
    call = {k: v for k, v in asdict(cfg.pipeline).items() if v is not None}
    images = render(
        pipe, prompts, cfg.seeds, maps, steering.strengths, **{**resolve(steering.spec).pipeline_settings, **call}
    )
    with grid_output(cfg):
        path = save_png(cfg.image_grid, grid(images))
    columns = [f"{s:g}" for s in steering.strengths] if maps is not None else [steering.label]
    rows = [{"prompt": p, "seed": int(seed), "column": c} for c in columns for p in prompts for seed in cfg.seeds]
    print(f"{len(prompts)} prompts x {len(cfg.seeds)} seeds x columns {columns}: {path}")
    return rows
