"""The concept / utility trade-off of several maps folders (``python -m lineas.compare``).

Every maps folder (LinEAS at any sparsity, Linear-AcT, mean shift: they share the format) is evaluated
by :func:`lineas.tasks.evaluate.evaluate` on the same prompts, sentences and sampling seed, at each strength;
the base model once (strength 0), with the concept scorer(s) of the settings (default: toxicity). Writes
``compare.json``, ``compare.md`` (a table with standard errors), ``tradeoff.png`` (the first scorer's mean
against perplexity, one line per maps folder through its strengths) and ``generations.jsonl`` under
``output_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import nn

from lineas.core.maps import AffineMaps
from lineas.metrics.concept import ConceptScore
from lineas.metrics.toxicity import Toxicity
from lineas.tasks.configs import Sampling
from lineas.tasks.evaluate import evaluate, scorers_of
from lineas.tasks.figures import pyplot, save_figure

NAMES = {"lineas": "LinEAS", "linear_act": "Linear-AcT", "mean_shift": "mean shift"}


def describe(maps: AffineMaps) -> dict[str, Any]:
    """Estimator, support (dimensions and fraction) and clip of a maps folder, for the table."""
    support = maps.support(maps.info.get("sparsity", {}).get("eps", 1e-5))["total"]
    total = sum(maps.dims)
    name = NAMES.get(maps.info.get("estimator", "lineas"), maps.info.get("estimator"))
    label = (
        f"{name}, {'clipped' if maps.clipped else 'unclipped'}"
        if name != "LinEAS"
        else (f"LinEAS, support {100 * support / total:.1f}%")
    ) + (f", {maps.gate.info.get('fit', 'gated').replace('_', ' ')} gate" if maps.gated else "")
    return {
        "label": label,
        "estimator": maps.info.get("estimator", "lineas"),
        "support": support,
        "dims": total,
        "clipped": maps.clipped,
    }


def default_labels(maps: Sequence[AffineMaps], dirs: Sequence[str | Path]) -> list[str]:
    """One distinct label per maps folder: :func:`describe`'s, with the run's folder name where two coincide."""
    labels = [describe(m)["label"] for m in maps]
    runs = [Path(d).parent.name if Path(d).name == "maps" else Path(d).name for d in dirs]
    labels = [f"{lab} ({run})" if labels.count(lab) > 1 else lab for lab, run in zip(labels, runs)]
    return [f"{lab} #{i + 1}" if labels.count(lab) > 1 else lab for i, lab in enumerate(labels)]


def compare(
    model: nn.Module,
    tokenizer: Any,
    runs: dict[str, AffineMaps],
    strengths: Sequence[float],
    prompts: list[str],
    neutral: list[str],
    sampling: Sampling | None = None,
    threshold: float | None = None,
    progress: bool = True,
    scorer: Any = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Metric rows (``method``, ``strength``, concept score(s), perplexity, fluency, standard errors) and generated
    rows. ``scorer`` and ``threshold``: as in :func:`lineas.tasks.evaluate.evaluate`."""
    scorers = scorers_of(scorer, threshold)
    first = next(iter(runs.values()))
    base, generated = evaluate(
        model, tokenizer, first, [0.0], prompts, neutral, sampling, progress=progress, scorer=scorers
    )
    rows = [{"method": "base model", "support": None, "dims": None, "clipped": False, **base[0]}]
    generated = [{**r, "method": "base model"} for r in generated]
    for label, maps in runs.items():
        info = describe(maps)
        metrics, gen = evaluate(
            model, tokenizer, maps, strengths, prompts, neutral, sampling, progress=progress, scorer=scorers
        )
        rows += [
            {"method": label, "support": info["support"], "dims": info["dims"], "clipped": info["clipped"], **m}
            for m in metrics
        ]
        generated += [{**r, "method": label} for r in gen]
    return rows, generated


def format_table(rows: list[dict[str, Any]], scorers: Sequence[ConceptScore] | None = None) -> str:
    """A Markdown table: method, support, strength, each scorer's rate and mean (default: toxicity), joint success
    (several scorers), perplexity and fluency (± se)."""
    scorers = scorers or [Toxicity()]
    joint = "joint_success" in rows[0]
    head = [f"{s.hit_label} rate | mean {s.score_label} (± se)" for s in scorers]
    head += ["joint success (± se)"] if joint else []
    lines = [
        f"| method | support | strength | {' | '.join(head)} | perplexity (± se) | fluency (± se) |",
        "|---|---|---" + "|---" * (2 * len(scorers) + joint + 2) + "|",
    ]
    last = None
    for r in rows:
        same = r["method"] == last
        support = "—" if r["support"] is None else f"{r['support']} ({100 * r['support'] / r['dims']:.1f}%)"
        cells = [
            f"{r[f'{s.name}_rate']:.3f} | {r[f'{s.name}_mean']:.3f} ± {r[f'{s.name}_mean_se']:.3f}" for s in scorers
        ]
        cells += [f"{r['joint_success']:.3f} ± {r['joint_success_se']:.3f}"] if joint else []
        lines.append(
            f"| {'' if same else r['method']} | {'' if same else support} | {r['strength']:g} | {' | '.join(cells)} | "
            f"{r['perplexity']:.2f} ± {r['perplexity_se']:.2f} | {r['fluency']:.2f} ± {r['fluency_se']:.2f} |"
        )
        last = r["method"]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str, scorer: ConceptScore | None = None) -> None:
    """The scorer's mean (default: toxicity) against perplexity with standard-error bars; one line per method,
    strengths annotated."""
    plt = pyplot()
    key = (scorer or Toxicity()).name + "_mean"
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    base = rows[0]
    ax.errorbar(
        [base["perplexity"]],
        [base[key]],
        xerr=[base["perplexity_se"]],
        yerr=[base[key + "_se"]],
        fmt="k*",
        markersize=12,
        label="base model",
        zorder=5,
    )
    methods = list(dict.fromkeys(r["method"] for r in rows[1:]))
    for method in methods:
        pts = [base] + [r for r in rows[1:] if r["method"] == method]
        ax.errorbar(
            [p["perplexity"] for p in pts],
            [p[key] for p in pts],
            xerr=[p["perplexity_se"] for p in pts],
            yerr=[p[key + "_se"] for p in pts],
            fmt="o-",
            capsize=2,
            markersize=4,
            label=method,
        )
        for p in pts[1:]:
            ax.annotate(
                f"{p['strength']:g}",
                (p["perplexity"], p[key]),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, 3),
            )
    ppl = [r["perplexity"] for r in rows]
    wide = max(ppl) > 5 * min(ppl)  # a blown-up baseline: a log axis keeps the others readable
    if wide:
        ax.set_xscale("log")
    ax.set_xlabel(f"perplexity of neutral sentences{' (log scale)' if wide else ''}")
    ax.set_ylabel(f"mean {(scorer or Toxicity()).score_label} of continuations")
    if min(r[key] for r in rows) >= 0:
        ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
