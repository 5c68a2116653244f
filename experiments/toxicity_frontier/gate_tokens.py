"""A picture of which words a gate steers: a few development prompts with their steered continuations, and a few
neutral development sentences, each token shaded by its gate (the mean over the gated sites, the maps live).

    python experiments/toxicity_frontier/gate_tokens.py --maps RUN/maps [--out docs/gate_tokens.png]

The prompts are the first ``--prompts`` of ``toxicity/prompts_dev.txt`` and the sentences the first
``--sentences`` of ``neutral/wiki_dev.txt`` (development sets: never the test sets); continuations are
sampled as the evaluation samples them (seed 0, 32 tokens) at strength 1.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from lineas import load_maps
from lineas.core.files import data_path
from lineas.core.prompts import read_prompts
from lineas.models.causal_lm import load_causal_lm
from lineas.tasks.configs import Sampling
from lineas.tasks.figures import pyplot, save_figure
from lineas.tasks.gate import token_gates
from lineas.tasks.generate import generate

CHARS = 110  # characters per line of the picture (a monospace font)
CHAR_W, LINE_H = 0.0755, 0.2  # inches per character and per line at 9 pt


def layout(tokens: list[tuple[str, float]]) -> list[list[tuple[int, str, float]]]:
    """Tokens in lines of at most :data:`CHARS` characters: per line, (column, text, gate)."""
    lines: list[list[tuple[int, str, float]]] = [[]]
    col = 0
    for text, gate in tokens:
        text = text.replace("\n", " ")
        if col + len(text) > CHARS and lines[-1]:
            lines.append([])
            col = 0
            text = text.lstrip()
        lines[-1].append((col, text, gate))
        col += len(text)
    return lines


def draw(rows: list[tuple[str, list[tuple[str, float]]]], path: Path, title: str) -> None:
    plt = pyplot()
    laid = [(label, layout(tokens)) for label, tokens in rows]
    height = 0.7 + LINE_H * sum(len(lines) + 1.4 for _, lines in laid)
    width = CHARS * CHAR_W + 0.6
    fig = plt.figure(figsize=(width, height))
    cmap = plt.get_cmap("Reds")
    y = height - 0.45
    fig.text(0.3 / width, y / height, title, fontsize=9, weight="bold", va="center")
    for label, lines in laid:
        y -= LINE_H * 1.3
        fig.text(0.3 / width, y / height, label, fontsize=8, color="0.35", va="center")
        for line in lines:
            y -= LINE_H
            for col, text, gate in line:
                fig.text(
                    (0.3 + col * CHAR_W) / width,
                    y / height,
                    text,
                    fontsize=9,
                    family="DejaVu Sans Mono",
                    va="center",
                    bbox={"facecolor": cmap(0.85 * gate), "edgecolor": "none", "pad": 0.4},
                )
    save_figure(fig, path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", required=True, help="a gated maps folder")
    parser.add_argument("--out", type=Path, default=Path("docs/gate_tokens.png"))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--sentences", type=int, default=2)
    args = parser.parse_args()
    maps = load_maps(args.maps)
    if maps.gate is None:
        raise SystemExit(f"{args.maps}: no gate (gate.safetensors): fit one with python -m lineas.gate")
    model, tokenizer = load_causal_lm(maps.info["base_model"], "float32")
    prompts = read_prompts(data_path("toxicity/prompts_dev.txt"))[: args.prompts]
    rows = generate(model, tokenizer, prompts, maps, (1.0,), Sampling(batch_size=len(prompts)), progress=False)
    texts = [("prompt + steered continuation", r["prompt"] + r["continuation"]) for r in rows]
    texts += [("neutral sentence", s) for s in read_prompts(data_path("neutral/wiki_dev.txt"))[: args.sentences]]
    shaded = [(k, token_gates(model, tokenizer, text, [maps.gate], maps.apply(model, 1.0))) for k, text in texts]
    for label, tokens in shaded:
        mean = sum(g for _, g in tokens) / len(tokens)
        print(f"{label} (mean gate {mean:.3f}): " + textwrap.shorten("".join(t for t, _ in tokens), 100))
    title = f"{Path(args.maps).parent.name}: each token shaded by its gate (white 0, red 1), strength 1"
    draw(shaded, args.out, title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
