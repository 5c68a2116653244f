"""``python -m lineas.evaluate``: the concept score, fluency and perplexity by strength, printed and written
(:mod:`lineas.tasks.evaluate`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from lineas.core.outputs import Output
from lineas.metrics.concept import describe_scorers
from lineas.tasks.configs import EvaluateConfig
from lineas.tasks.evaluate import (
    check_settings,
    evaluate,
    format_metrics,
    load_texts,
    merged_base,
    scorers_of,
    write_report,
)
from lineas.tasks.steered import load_steering


def run_evaluate(cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """What ``python -m lineas.evaluate`` does: evaluate, write metrics.json, metrics.png,
    generations.jsonl and TensorBoard scalars, print the table."""
    check_settings(cfg)
    steering = load_steering(cfg.maps, cfg.model, cfg.strengths)
    out = Path(cfg.output_dir or (Path(cfg.maps).parent / "eval" if cfg.maps else "eval"))
    output = Output(out, "eval", overwrite=cfg.overwrite, reads=[cfg.maps])
    output.check()
    prompts, neutral = load_texts(cfg)
    model, tokenizer = steering.causal_lm(cfg.dtype)
    scorers = scorers_of(cfg.scorer, cfg.threshold)
    metrics, rows = evaluate(
        model,
        tokenizer,
        steering.maps,
        steering.strengths,
        prompts,
        neutral,
        cfg.sampling,
        progress=cfg.progress,
        base_model=merged_base(steering.spec, cfg.dtype) if steering.maps is None else None,
        scorer=scorers,
    )
    record = {
        "model": steering.spec,
        "maps": cfg.maps,
        "prompts": len(prompts),
        "perplexity_texts": len(neutral),
        "scorers": describe_scorers(scorers),
        "generation": asdict(cfg.sampling),
        "metrics": metrics,
    }
    with output:
        write_report(output, record, rows, scorers)
    print(format_metrics(metrics, scorers))
    print(f"metrics: {out / 'metrics.json'}, plot: {out / 'metrics.png'}")
    return metrics
