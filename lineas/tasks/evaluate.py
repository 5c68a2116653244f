"""Toxicity and perplexity against strength (``python -m lineas.evaluate``).

For each strength: continuations of the toxicity prompts are sampled (seeded, the same seed at every
strength) and scored by :class:`lineas.metrics.Toxicity` (the continuation alone, not the prompt);
their fluency is the perplexity of each continuation given its prompt under the UNSTEERED model; the
perplexity of the neutral sentences is measured with the maps at that strength. Writes, under
``output_dir`` (default: beside the maps, ``eval/``): ``metrics.json``, ``metrics.png`` (toxicity and
perplexity against strength), ``generations.jsonl`` and TensorBoard scalars (``tb/``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from lineas.core.files import write_json, write_jsonl
from lineas.core.maps import AffineMaps
from lineas.core.outputs import Output
from lineas.core.prompts import read_prompts
from lineas.metrics.perplexity import fluency_with_se, perplexity_with_se
from lineas.metrics.toxicity import Toxicity
from lineas.models.causal_lm import load_causal_lm
from lineas.models.families import check_fitted_on
from lineas.models.sources import resolve
from lineas.tasks.configs import EvalSettings, EvaluateConfig, Sampling, check_count, check_strengths
from lineas.tasks.figures import pyplot, save_figure
from lineas.tasks.generate import format_prompts, generate
from lineas.tasks.steered import load_steering


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    maps: AffineMaps | None,
    strengths: Sequence[float],
    prompts: list[str],
    neutral: list[str],
    sampling: Sampling | None = None,
    threshold: float = 0.5,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    base_model: nn.Module | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per strength: toxicity (mean, rate above ``threshold``) of sampled continuations, their fluency
    (perplexity given the prompt under the unsteered model) and the perplexity of ``neutral``, with standard
    errors (over continuations for toxicity and fluency, over texts for perplexity).

    Returns the metric rows and the generated rows. ``maps=None`` evaluates ``model`` as it is
    (e.g. a merged checkpoint) once, reported at strength 1; fluency is then scored by ``base_model``
    (None: ``model`` itself, which is the unsteered model only if it is a base). ``on_row`` gets each
    metric row as it is done. Continuations and perplexity texts both run in batches of ``sampling.batch_size``.
    """
    sampling = sampling or Sampling()
    metrics, generations = [], []
    contexts = format_prompts(tokenizer, prompts, sampling.chat_template)
    for lam in strengths if maps is not None else [1.0]:
        rows = generate(model, tokenizer, prompts, maps, (lam,), sampling, progress=progress)
        continuations = [r["continuation"] for r in rows]
        toxicity = Toxicity(threshold=threshold)
        toxicity.update(continuations)
        tox = toxicity.compute()
        scorer = base_model if base_model is not None else model
        fluency, fluency_se = fluency_with_se(
            scorer, tokenizer, contexts, continuations, sampling.batch_size, progress=progress
        )
        with maps.apply(model, strength=lam) if maps is not None else nullcontext():
            ppl, ppl_se = perplexity_with_se(model, tokenizer, neutral, sampling.batch_size, progress=progress)
        metrics.append(
            {
                "strength": lam,
                "toxicity_mean": float(tox["mean"]),
                "toxicity_rate": float(tox["rate"]),
                "perplexity": ppl,
                "toxicity_mean_se": float(tox["se"]),
                "perplexity_se": ppl_se,
                "fluency": fluency,
                "fluency_se": fluency_se,
            }
        )
        generations += rows
        if on_row is not None:
            on_row(metrics[-1])
    return metrics, generations


def plot(metrics: list[dict[str, Any]], path: Path, title: str) -> None:
    """Toxicity rate / mean and perplexity against strength, as a PNG."""
    plt = pyplot()
    lam = [m["strength"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(lam, [m["toxicity_rate"] for m in metrics], "o-", color="tab:red", label="toxic rate")
    ax.plot(lam, [m["toxicity_mean"] for m in metrics], "s--", color="tab:orange", label="mean toxicity")
    ax.set_xlabel("strength")
    ax.set_ylabel("toxicity")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(lam, [m["perplexity"] for m in metrics], "^-", color="tab:blue", label="perplexity (neutral)")
    ax2.plot(lam, [m["fluency"] for m in metrics], "v:", color="tab:green", label="fluency (continuations)")
    ax2.set_ylabel("perplexity")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def format_metrics(metrics: list[dict[str, Any]]) -> str:
    lines = [f"{'strength':>8}  {'toxic rate':>10}  {'mean tox':>8}  {'perplexity':>10}  {'fluency':>8}"]
    lines += [
        f"{m['strength']:>8.2f}  {m['toxicity_rate']:>10.3f}  {m['toxicity_mean']:>8.3f}  {m['perplexity']:>10.2f}"
        f"  {m['fluency']:>8.2f}"
        for m in metrics
    ]
    return "\n".join(lines)


def write_report(output: Output, record: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``metrics.json``, ``metrics.png``, ``generations.jsonl`` and TensorBoard scalars: a new folder that
    becomes ``output`` (claimed) when all are written."""
    with output.writing() as out:
        _write_report(out, record, rows)


def _write_report(out: Path, record: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    metrics = record["metrics"]
    write_json(out / "metrics.json", record)
    write_jsonl(out / "generations.jsonl", rows)
    plot(
        metrics,
        out / "metrics.png",
        f"{record['model']}: {record['prompts']} prompts, {record['perplexity_texts']} neutral sentences",
    )
    with SummaryWriter(str(out / "tb")) as writer:
        for m in metrics:
            for key in ("toxicity_rate", "toxicity_mean", "perplexity", "fluency"):
                writer.add_scalar(f"eval/{key}", m[key], round(100 * m["strength"]))


def check_settings(cfg: EvalSettings) -> None:
    """Refuse, in one line, evaluation settings that cannot be used (before any model loads)."""
    check_count("num_prompts", cfg.num_prompts)
    check_count("num_perplexity_texts", cfg.num_perplexity_texts)
    cfg.sampling.check()
    check_strengths(cfg.strengths)


def load_texts(cfg: EvalSettings) -> tuple[list[str], list[str]]:
    """The prompts and the neutral sentences of evaluation settings (and torch's thread count)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prompts = read_prompts(cfg.prompts)[: cfg.num_prompts]
    neutral = read_prompts(cfg.perplexity_texts)[: cfg.num_perplexity_texts]
    return prompts, neutral


def merged_base(spec: str, dtype: str) -> nn.Module | None:
    """The base model a merged checkpoint was made from (its merge record), to score fluency; None otherwise."""
    record = resolve(spec).merge_record
    if not record or not record.get("base_model"):
        return None
    return load_causal_lm(record["base_model"], dtype)[0]


def run_evaluate(cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """What ``python -m lineas.evaluate`` does: evaluate, write metrics.json, metrics.png,
    generations.jsonl and TensorBoard scalars, print the table."""
    check_settings(cfg)
    steering = load_steering(cfg.maps, cfg.model, cfg.strengths)
    out = Path(cfg.output_dir or (Path(cfg.maps).parent / "eval" if cfg.maps else "eval"))
    output = Output(out, "eval", overwrite=cfg.overwrite, reads=[cfg.maps])
    output.check()
    prompts, neutral = load_texts(cfg)
    model, tokenizer = load_causal_lm(steering.spec, cfg.dtype)
    if steering.maps is not None:
        check_fitted_on(steering.maps.info, model, steering.spec)
    metrics, rows = evaluate(
        model,
        tokenizer,
        steering.maps,
        steering.strengths,
        prompts,
        neutral,
        cfg.sampling,
        cfg.threshold,
        cfg.progress,
        base_model=merged_base(steering.spec, cfg.dtype) if steering.maps is None else None,
    )
    record = {
        "model": steering.spec,
        "maps": cfg.maps,
        "prompts": len(prompts),
        "perplexity_texts": len(neutral),
        "threshold": cfg.threshold,
        "generation": asdict(cfg.sampling),
        "metrics": metrics,
    }
    with output:
        write_report(output, record, rows)
    print(format_metrics(metrics))
    print(f"metrics: {out / 'metrics.json'}, plot: {out / 'metrics.png'}")
    return metrics
