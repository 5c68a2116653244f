"""``python -m lineas.evaluate maps=DIR strengths=[0,0.25,0.5,0.75,1]``: toxicity and perplexity vs strength.

For each strength: continuations of the toxicity prompts are sampled (seeded, the same seed at every
strength) and scored by :class:`lineas.metrics.Toxicity` (the continuation alone, not the prompt);
the perplexity of the neutral sentences is measured with the maps at that strength. Writes, under
``output_dir`` (default: beside the maps, ``eval/``): ``metrics.json``, ``metrics.png`` (toxicity and
perplexity against strength), ``generations.jsonl`` and TensorBoard scalars (``tb/``).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lineas.atomic import write_json, write_jsonl
from lineas.datamodules import read_prompts
from lineas.generate import generate, load_model
from lineas.maps import AffineMaps, load_maps
from lineas.metrics.perplexity import perplexity_with_se
from lineas.metrics.toxicity import Toxicity


def evaluate(model: nn.Module, tokenizer: Any, maps: AffineMaps | None, strengths: Sequence[float],
             prompts: list[str], neutral: list[str], generation: dict[str, Any], threshold: float = 0.5,
             progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per strength: toxicity (mean, rate above ``threshold``) of sampled continuations and perplexity,
    with the standard errors of the mean toxicity (over continuations) and of the perplexity (over texts).

    Returns the metric rows and the generated rows. ``maps=None`` evaluates ``model`` as it is
    (e.g. a merged checkpoint) once, reported at strength 1.
    """
    metrics, generations = [], []
    for lam in strengths if maps is not None else [1.0]:
        rows = generate(model, tokenizer, prompts, maps=maps, strengths=(lam,), progress=progress, **generation)
        toxicity = Toxicity(threshold=threshold)
        toxicity.update([r["continuation"] for r in rows])
        tox = toxicity.compute()
        with maps.apply(model, strength=lam) if maps is not None else nullcontext():
            ppl, ppl_se = perplexity_with_se(model, tokenizer, neutral, progress=progress)
        metrics.append({"strength": lam, "toxicity_mean": float(tox["mean"]), "toxicity_rate": float(tox["rate"]),
                        "perplexity": ppl, "toxicity_mean_se": float(tox["se"]), "perplexity_se": ppl_se})
        generations += rows
    return metrics, generations


def plot(metrics: list[dict[str, Any]], path: Path, title: str) -> None:
    """Toxicity rate / mean and perplexity against strength, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = [m["strength"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(lam, [m["toxicity_rate"] for m in metrics], "o-", color="tab:red", label="toxic rate")
    ax.plot(lam, [m["toxicity_mean"] for m in metrics], "s--", color="tab:orange", label="mean toxicity")
    ax.set_xlabel("strength")
    ax.set_ylabel("toxicity")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(lam, [m["perplexity"] for m in metrics], "^-", color="tab:blue", label="perplexity")
    ax2.set_ylabel("perplexity (neutral sentences)")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def format_metrics(metrics: list[dict[str, Any]]) -> str:
    lines = [f"{'strength':>8}  {'toxic rate':>10}  {'mean tox':>8}  {'perplexity':>10}"]
    lines += [f"{m['strength']:>8.2f}  {m['toxicity_rate']:>10.3f}  {m['toxicity_mean']:>8.3f}  {m['perplexity']:>10.2f}"
              for m in metrics]
    return "\n".join(lines)


def write_report(out: Path, record: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``metrics.json``, ``metrics.png``, ``generations.jsonl`` and TensorBoard scalars under ``out``."""
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    metrics = record["metrics"]
    write_json(out / "metrics.json", record)
    write_jsonl(out / "generations.jsonl", rows)
    plot(metrics, out / "metrics.png",
         f"{record['model']}: {record['prompts']} prompts, {record['perplexity_texts']} neutral sentences")
    with SummaryWriter(str(out / "tb")) as writer:
        for m in metrics:
            for key in ("toxicity_rate", "toxicity_mean", "perplexity"):
                writer.add_scalar(f"eval/{key}", m[key], round(100 * m["strength"]))


def load_texts(cfg: DictConfig) -> tuple[list[str], list[str], dict[str, Any]]:
    """The prompts, the neutral sentences and the sampling settings of an ``evaluate.yaml`` config."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prompts = read_prompts(cfg.prompts)[: cfg.num_prompts]
    neutral = read_prompts(cfg.perplexity_texts)[: cfg.num_perplexity_texts]
    return prompts, neutral, OmegaConf.to_container(cfg.generation, resolve=True)


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """The CLI: load, evaluate, write metrics.json, metrics.png, generations.jsonl, TensorBoard."""
    maps = load_maps(cfg.maps) if cfg.maps else None
    spec = cfg.model or (maps.info["base_model"] if maps is not None else None)
    if spec is None:
        raise SystemExit("give maps=DIR (a maps folder) or model=FOLDER (e.g. a merged checkpoint)")
    out = Path(cfg.output_dir or (Path(cfg.maps).parent / "eval" if cfg.maps else "eval"))
    model, tokenizer = load_model(spec, cfg.dtype)
    prompts, neutral, generation = load_texts(cfg)
    metrics, rows = evaluate(model, tokenizer, maps, list(cfg.strengths), prompts, neutral, generation,
                             cfg.threshold, cfg.progress)
    record = {"model": spec, "maps": str(cfg.maps) if cfg.maps else None, "prompts": len(prompts),
              "perplexity_texts": len(neutral), "threshold": cfg.threshold, "generation": generation,
              "metrics": metrics}
    write_report(out, record, rows)
    print(format_metrics(metrics))
    print(f"metrics: {out / 'metrics.json'}, plot: {out / 'metrics.png'}")
    return metrics


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    from lineas.config import register

    register()
    _main()
