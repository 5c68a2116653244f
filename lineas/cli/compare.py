"""``python -m lineas.compare``: several maps folders of one base model evaluated side by side; the table, the
trade-off plot and the JSON (:mod:`lineas.tasks.compare`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lineas.core.errors import ConfigError
from lineas.core.files import write_json, write_jsonl, write_text
from lineas.core.outputs import Output
from lineas.metrics.concept import describe_scorers
from lineas.tasks.compare import compare, default_labels, format_table, plot
from lineas.tasks.configs import CompareConfig
from lineas.tasks.evaluate import check_settings, load_texts, scorers_of
from lineas.tasks.steered import load_steering, one_base_model


def run_compare(cfg: CompareConfig) -> list[dict[str, Any]]:
    """What ``python -m lineas.compare`` does: evaluate every maps folder on one model, write the table,
    the plot and the JSON."""
    check_settings(cfg)
    dirs = list(cfg.maps) if isinstance(cfg.maps, (list, tuple)) else [cfg.maps]
    output = Output(cfg.output_dir, "compare", overwrite=cfg.overwrite, reads=dirs)
    output.check()
    steerings = [load_steering(d, cfg.model) for d in dirs]
    maps = [s.maps for s in steerings]
    labels = list(cfg.labels) if cfg.labels else default_labels(maps, dirs)
    if len(labels) != len(maps) or len(set(labels)) != len(labels):
        raise ConfigError(f"labels {labels}: give one distinct label per maps folder ({len(maps)})")
    one_base_model(steerings, dirs)
    prompts, neutral = load_texts(cfg)
    model, tokenizer = steerings[0].causal_lm(cfg.dtype)
    for s in steerings[1:]:
        s.check_against(model)
    scorers = scorers_of(cfg.scorer, cfg.threshold)
    rows, generated = compare(
        model,
        tokenizer,
        dict(zip(labels, maps)),
        list(cfg.strengths),
        prompts,
        neutral,
        cfg.sampling,
        progress=cfg.progress,
        scorer=scorers,
    )
    with output, output.writing() as out:
        write_json(
            out / "compare.json",
            {
                "maps": dict(zip(labels, map(str, dirs))),
                "prompts": cfg.prompts,
                "perplexity_texts": cfg.perplexity_texts,
                "generation": asdict(cfg.sampling),
                "scorers": describe_scorers(scorers),
                "rows": rows,
            },
        )
        write_jsonl(out / "generations.jsonl", generated)
        table = format_table(rows, scorers)
        write_text(out / "compare.md", table + "\n")
        title = f"{len(prompts)} prompts, {len(neutral)} neutral sentences; labels = strength"
        plot(rows, out / "tradeoff.png", title, scorers[0])
    print(table)
    print(f"table: {output.path / 'compare.md'}, plot: {output.path / 'tradeoff.png'}")
    return rows
