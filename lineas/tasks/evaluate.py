"""A concept score and perplexity against strength (``python -m lineas.evaluate``).

For each strength: continuations of the prompts are sampled (seeded, the same seed at every strength) and
scored by the concept scorer (:class:`lineas.metrics.ConceptScore`; default :class:`lineas.metrics.Toxicity`;
``scorer: {_target_: lineas.metrics.Sentiment}`` for another; the continuation alone, not the prompt). With
several scorers, each has its columns and ``joint_success`` is the fraction of continuations that succeed for
all (e.g. non-toxic AND positive). Their fluency is the perplexity of each continuation given its prompt
under the UNSTEERED model; the perplexity of the neutral sentences is measured with the maps at that strength.
Writes under ``output_dir`` (default: beside the maps, ``eval/``): ``metrics.json``, ``metrics.png`` (the first scorer's
rate and mean, perplexity and fluency against strength), ``generations.jsonl`` and TensorBoard scalars (``tb/``).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from lineas.core.files import write_json, write_jsonl
from lineas.core.maps import AffineMaps
from lineas.core.outputs import Output
from lineas.core.prompts import read_prompts
from lineas.metrics.concept import ConceptScore, build_scorers, concept_columns
from lineas.metrics.perplexity import fluency_with_se, perplexity_with_se
from lineas.metrics.toxicity import Toxicity
from lineas.models.causal_lm import load_causal_lm
from lineas.models.sources import resolve
from lineas.tasks.configs import EvalSettings, Sampling, check_count, check_strengths
from lineas.tasks.figures import pyplot, save_figure
from lineas.tasks.generate import format_prompts, generate


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    maps: AffineMaps | None,
    strengths: Sequence[float],
    prompts: list[str],
    neutral: list[str],
    sampling: Sampling | None = None,
    threshold: float | None = None,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    base_model: nn.Module | None = None,
    scorer: Any = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per strength: the concept score (mean, rate of hits) of sampled continuations, their fluency
    (perplexity given the prompt under the unsteered model) and the perplexity of ``neutral``, with standard
    errors (over continuations for the score and fluency, over texts for perplexity).

    ``scorer``: a :class:`~lineas.metrics.ConceptScore`, ``{"_target_": CLASS, ...}`` or a list of them (None:
    toxicity); ``threshold`` (None: the scorer's own) replaces the first scorer's threshold.

    Returns the metric rows and the generated rows. ``maps=None`` evaluates ``model`` as it is
    (e.g. a merged checkpoint) once, reported at strength 1; fluency is then scored by ``base_model``
    (None: ``model`` itself, which is the unsteered model only if it is a base). ``on_row`` gets each
    metric row as it is done. Continuations and perplexity texts both run in batches of ``sampling.batch_size``.
    """
    sampling = sampling or Sampling()
    scorers = scorers_of(scorer, threshold)
    metrics, generations = [], []
    contexts = format_prompts(tokenizer, prompts, sampling.chat_template)
    for lam in strengths if maps is not None else [1.0]:
        rows = generate(model, tokenizer, prompts, maps, (lam,), sampling, progress=progress)
        continuations = [r["continuation"] for r in rows]
        columns, scores = concept_columns(scorers, continuations)
        fluency, fluency_se = fluency_with_se(
            base_model if base_model is not None else model,
            tokenizer,
            contexts,
            continuations,
            sampling.batch_size,
            progress=progress,
        )
        with maps.apply(model, strength=lam) if maps is not None else nullcontext():
            ppl, ppl_se = perplexity_with_se(model, tokenizer, neutral, sampling.batch_size, progress=progress)
        metrics.append(
            {
                "strength": lam,
                **columns,
                "perplexity": ppl,
                "perplexity_se": ppl_se,
                "fluency": fluency,
                "fluency_se": fluency_se,
            }
        )
        generations += [{**r, **s} for r, s in zip(rows, scores)]
        if on_row is not None:
            on_row(metrics[-1])
    return metrics, generations


def scorers_of(spec: Any, threshold: float | None = None) -> list[ConceptScore]:
    """The concept scorers of ``spec`` (see :func:`lineas.metrics.concept.build_scorers`; None: toxicity), the
    first with ``threshold`` if given."""
    return build_scorers(Toxicity() if spec is None else spec, threshold)


def plot(metrics: list[dict[str, Any]], path: Path, title: str, scorer: ConceptScore | None = None) -> None:
    """The scorer's rate of hits and mean score (default: toxicity), perplexity and fluency against strength."""
    plt = pyplot()
    scorer = scorer or Toxicity()
    lam = [m["strength"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    rate, mean = [m[f"{scorer.name}_rate"] for m in metrics], [m[f"{scorer.name}_mean"] for m in metrics]
    ax.plot(lam, rate, "o-", color="tab:red", label=f"{scorer.hit_label} rate")
    ax.plot(lam, mean, "s--", color="tab:orange", label=f"mean {scorer.score_label}")
    ax.set_xlabel("strength")
    ax.set_ylabel(scorer.score_label)
    if min(mean) >= 0:
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


def format_metrics(metrics: list[dict[str, Any]], scorers: Sequence[ConceptScore] | None = None) -> str:
    """A plain-text table: strength, each scorer's rate and mean, joint success (several scorers), perplexity
    and fluency."""
    scorers = scorers or [Toxicity()]
    columns = [(f"{s.hit_label} rate", f"{s.name}_rate", ".3f") for s in scorers]
    columns += [(f"mean {s.name}", f"{s.name}_mean", ".3f") for s in scorers]
    columns += [("joint success", "joint_success", ".3f")] if "joint_success" in metrics[0] else []
    columns += [("perplexity", "perplexity", ".2f"), ("fluency", "fluency", ".2f")]
    lines = [f"{'strength':>8}" + "".join(f"  {h:>{max(8, len(h))}}" for h, _, _ in columns)]
    lines += [
        f"{m['strength']:>8.2f}" + "".join(f"  {m[k]:>{max(8, len(h))}{f}}" for h, k, f in columns) for m in metrics
    ]
    return "\n".join(lines)


def write_report(
    output: Output, record: dict[str, Any], rows: list[dict[str, Any]], scorers: Sequence[ConceptScore] | None = None
) -> None:
    """``metrics.json``, ``metrics.png``, ``generations.jsonl`` and TensorBoard scalars: a new folder that
    becomes ``output`` (claimed) when all are written."""
    with output.writing() as out:
        _write_report(out, record, rows, scorers)


def _write_report(
    out: Path, record: dict[str, Any], rows: list[dict[str, Any]], scorers: Sequence[ConceptScore] | None = None
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    metrics = record["metrics"]
    write_json(out / "metrics.json", record)
    write_jsonl(out / "generations.jsonl", rows)
    plot(
        metrics,
        out / "metrics.png",
        f"{record['model']}: {record['prompts']} prompts, {record['perplexity_texts']} neutral sentences",
        scorers[0] if scorers else None,
    )
    keys = [f"{s.name}_{k}" for s in scorers or [Toxicity()] for k in ("rate", "mean")]
    keys += ["joint_success"] if "joint_success" in metrics[0] else []
    with SummaryWriter(str(out / "tb")) as writer:
        for m in metrics:
            for key in [*keys, "perplexity", "fluency"]:
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
