"""Table and plot of the frontier search: mean toxicity against perplexity, one curve per setting through
its strengths (live-only settings, gated or clipped, dashed), the frontier of the mergeable settings (the
points no other point beats on both) drawn, and the gated settings' share of tokens steered.

    python experiments/toxicity_frontier/frontier.py [--split dev|test] [--only NAME ... --plot FILE]

Reads ``results/SPLIT/*.json`` (written by ``sweep.py``); writes ``results/SPLIT/frontier.md`` and
``results/SPLIT/frontier.png``; with ``--only``, prints the table of those settings and draws them in ``--plot``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lineas.core.files import write_text
from lineas.tasks.figures import pyplot, save_figure

HERE = Path(__file__).resolve().parent
PPL_BUDGET, FLUENCY_BUDGET = 1.05, 1.30


def load(split: str) -> tuple[dict, list[dict]]:
    folder = HERE / "results" / split
    base = json.loads((folder / "base.json").read_text())["metrics"][0]
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem != "base"]
    return base, [r for r in runs if r["metrics"]]


def why(run: dict) -> str:
    """How a diverged fit went: its held-out W2 before -> after, or the step its loss became non-finite."""
    if "heldout_w2" in run:
        return f"{run['heldout_w2']['before']:.4f} -> {run['heldout_w2']['after']:.4f}"
    step = run["failure"].split(" at step ")[1].split(" ")[0]
    return f"non-finite loss at step {step}"


def diverged(split: str) -> list[dict]:
    """The fits whose held-out W2 rose (not evaluated)."""
    folder = HERE / "results" / split
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem != "base"]
    return [r for r in runs if r.get("diverged")]


def gated(run: dict) -> bool:
    """Whether a setting's maps carry a gate (stage G)."""
    return "gate_share" in run


def live_only(run: dict) -> bool:
    """Whether a setting's maps cannot be merged: gated, or clipped (Linear-AcT's support clip)."""
    return gated(run) or run.get("clipped", False)


def points(base: dict, runs: list[dict]) -> list[dict]:
    """Every (setting, strength) point with its cut and relative costs."""
    out = []
    for run in runs:
        for m in run["metrics"]:
            out.append(
                {
                    "name": run["name"],
                    "strength": m["strength"],
                    "cut": base["toxicity_mean"] / m["toxicity_mean"],
                    "ppl_rel": m["perplexity"] / base["perplexity"] - 1,
                    "fluency_rel": m["fluency"] / base["fluency"] - 1,
                    "eligible": m["perplexity"] <= PPL_BUDGET * base["perplexity"]
                    and m["fluency"] <= FLUENCY_BUDGET * base["fluency"],
                    "live": live_only(run),
                    **m,
                }
            )
    return out


def pareto(pts: list[dict]) -> list[dict]:
    """Points not beaten on both mean toxicity and perplexity by another point, by perplexity."""
    front = [
        p
        for p in pts
        if not any(
            q["toxicity_mean"] <= p["toxicity_mean"]
            and q["perplexity"] <= p["perplexity"]
            and (q["toxicity_mean"], q["perplexity"]) != (p["toxicity_mean"], p["perplexity"])
            for q in pts
        )
    ]
    return sorted(front, key=lambda p: p["perplexity"])


def table(base: dict, runs: list[dict], pts: list[dict]) -> str:
    lines = [
        f"Base: mean toxicity {base['toxicity_mean']:.4f} ± {base['toxicity_mean_se']:.4f}, perplexity "
        f"{base['perplexity']:.2f} ± {base['perplexity_se']:.2f}, fluency {base['fluency']:.2f} ± "
        f"{base['fluency_se']:.2f}. Eligible (*): perplexity <= +{100 * (PPL_BUDGET - 1):.0f}% and fluency <= "
        f"+{100 * (FLUENCY_BUDGET - 1):.0f}%.",
        "",
        "| setting | support | fit s | strength | mean toxicity (± se) | cut | perplexity (± se) | fluency (± se) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_name = {r["name"]: r for r in runs}
    for p in pts:
        run = by_name[p["name"]]
        first = p["strength"] == run["metrics"][0]["strength"]
        support = f"{run['support']} ({100 * run['support'] / run['dims']:.1f}%)" if first else ""
        wall = f"{run['fit_wall_s']:.0f}" if first and run["fit_wall_s"] else ""
        lines.append(
            f"| {p['name'] if first else ''} | {support} "
            f"| {wall} | {p['strength']:g} | {p['toxicity_mean']:.4f} ± "
            f"{p['toxicity_mean_se']:.4f} | {p['cut']:.2f}x{' *' if p['eligible'] else ''} | {p['perplexity']:.2f} ± "
            f"{p['perplexity_se']:.2f} ({100 * p['ppl_rel']:+.1f}%) | {p['fluency']:.2f} ± {p['fluency_se']:.2f} "
            f"({100 * p['fluency_rel']:+.1f}%) |"
        )
    shares = [r for r in runs if gated(r)]
    if shares:
        lines += [
            "",
            "Gated settings (live only): share of tokens steered at strength 1 (the mean gate over tokens and sites)",
            "",
            "| setting | on the prompts | on their continuations | on the neutral sentences |",
            "|---|---|---|---|",
        ]
        for r in shares:
            g = r["gate_share"]
            lines.append(f"| {r['name']} | {g['prompts']:.3f} | {g['continuations']:.3f} | {g['neutral']:.3f} |")
    return "\n".join(lines)


def plot(base: dict, runs: list[dict], pts: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.2))
    ax.plot([base["perplexity"]], [base["toxicity_mean"]], "k*", markersize=12, label="base model", zorder=5)
    for run in runs:
        own = [p for p in pts if p["name"] == run["name"]]
        ax.plot(
            [base["perplexity"]] + [p["perplexity"] for p in own],
            [base["toxicity_mean"]] + [p["toxicity_mean"] for p in own],
            "o--" if live_only(run) else "o-",
            markersize=3,
            linewidth=1,
            label=run["name"],
        )
    front = pareto([p for p in pts if not p["live"]])
    ax.plot(
        [p["perplexity"] for p in front],
        [p["toxicity_mean"] for p in front],
        "k-",
        linewidth=2.5,
        alpha=0.35,
        label="frontier (mergeable)",
    )
    ax.axvline(PPL_BUDGET * base["perplexity"], color="grey", linestyle=":", linewidth=1)
    ax.axhline(base["toxicity_mean"] / 5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0.98 * base["perplexity"], 1.6 * base["perplexity"])  # points beyond +60% are off the plot
    ax.set_xlabel("perplexity of neutral sentences (dotted: +5%; points beyond +60% off the plot)")
    ax.set_ylabel("mean toxicity of continuations (dotted: 5x cut)")
    ax.set_ylim(0, 1.1 * base["toxicity_mean"])
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--only", nargs="*", default=None, help="these settings alone (with --plot)")
    parser.add_argument("--plot", type=Path, default=None, help="where the plot of --only goes")
    args = parser.parse_args()
    base, runs = load(args.split)
    title = f"SmolLM2-135M, {args.split} sets; each curve: strengths 0.25-1"
    if args.only:
        if args.plot is None:
            parser.error("--only needs --plot FILE")
        runs = [r for r in runs if r["name"] in args.only]
        pts = points(base, runs)
        plot(base, runs, pts, args.plot, title)
        print(table(base, runs, pts))
        return
    pts = points(base, runs)
    folder = HERE / "results" / args.split
    text = table(base, runs, pts)
    gone = diverged(args.split)
    if gone:
        text += "\n\nDiverged (held-out W2 of the fitting sentences rose, or the loss became non-finite; "
        text += "not evaluated): "
        text += ", ".join(f"{r['name']} ({why(r)})" for r in gone)
    write_text(folder / "frontier.md", text + "\n")
    plot(base, runs, pts, folder / "frontier.png", title)
    print(text)
    for live, kind in ((False, "mergeable"), (True, "live only")):
        eligible = [p for p in pts if p["eligible"] and p["live"] == live]
        if eligible:
            best = max(eligible, key=lambda p: p["cut"])
            print(f"largest eligible cut ({kind}): {best['name']} at strength {best['strength']:g}: {best['cut']:.2f}x")


if __name__ == "__main__":
    main()
