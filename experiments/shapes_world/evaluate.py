"""Text-to-image steering measured on the shapes world (``offline:shapes-sd``): prompt sets, and rates read
from generated images by :mod:`experiments.shapes_world.attributes` at several strengths.

Two experiments, each a pair of unpaired prompt sets for fitting and a held-out set for evaluation
(:func:`prompt_sets`, shipped as ``lineas/data/shapes/*.txt``):

- **style** induction: plain captions (source) -> the same captions with the style, in another order
  (target); measured on held-out plain captions: the rate of striped images, and the preservation of what
  the caption says (object count, and every shape-colour pair);
- **removal** of the circle: two-object captions with one circle (source) -> the same captions without the
  circle, in another order (target: lone objects); measured on held-out circle captions: the rate of images
  with a circle, and the preservation of the other object (its shape-colour pair) and of the style.

Settings are chosen on development captions (``*_dev.txt``) at other seeds, never on the held-out ones.
``python -m experiments.shapes_world.evaluate --experiment style --maps LinEAS=RUN/maps --prompted`` prints the rates by
strength as a Markdown table (``--out`` writes them as JSON; ``--maps`` repeats to compare maps folders);
``--check-base`` measures the base model's caption following (every caption of the world at ``--seeds``).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from experiments.shapes_world.attributes import ConceptRate, detect, follows
from experiments.shapes_world.world import COLOURS, SHAPES, caption, parse_caption
from lineas.core.files import data_path, write_json
from lineas.core.maps import AffineMaps, load_maps
from lineas.core.prompts import read_prompts
from lineas.models.diffusion import load_pipeline
from lineas.models.shapes_sd import SPEC
from lineas.models.sources import resolve
from lineas.tasks.images import render_rows

EXPERIMENTS = {
    "style": {"source": "plain.txt", "target": "striped.txt", "eval": "plain_eval.txt", "dev": "plain_dev.txt"},
    "removal": {"source": "circle.txt", "target": "no_circle.txt", "eval": "circle_eval.txt", "dev": "circle_dev.txt"},
}
REMOVED = "circle"
SEED_STRIDE = 1_000_000  # image_seed: more prompts than any list here


def all_captions() -> list[str]:
    """Every caption of the world: 12 lone objects and 132 ordered pairs of distinct objects, plain and striped."""
    kinds = [(s, c) for s in SHAPES for c in COLOURS]
    objects = [[k] for k in kinds] + [[a, b] for a, b in itertools.permutations(kinds, 2)]
    return [caption(o, st) for st in (False, True) for o in objects]


def prompt_sets(seed: int = 0, n: int = 40, n_eval: int = 48) -> dict[str, list[str]]:
    """The shipped prompt sets (``lineas/data/shapes/NAME.txt``), drawn from :func:`all_captions` with ``seed``.

    Style: ``plain`` (source; lone objects and pairs, 1 in 10 lone), ``striped`` (target: the same captions
    with the style, in another order) and ``plain_eval`` (held out: other scenes). Removal: ``circle``
    (source: pairs with exactly one circle), ``no_circle`` (target: the same captions without the circle,
    in another order) and ``circle_eval`` (held out: other pairs). The fitting loss never pairs a source
    prompt with a target prompt (it compares sorted activations per dimension): the sets are unpaired."""
    rng = np.random.default_rng(seed)
    caps = all_captions()

    def objects(c: str) -> list[tuple[str, str]]:
        return parse_caption(c)[0]

    def draw(pool: list[str], k: int) -> list[str]:
        return [pool[i] for i in rng.permutation(len(pool))[:k]]

    plain = [c for c in caps if not parse_caption(c)[1]]
    lone, pairs = [c for c in plain if len(objects(c)) == 1], [c for c in plain if len(objects(c)) == 2]
    lone, pairs = draw(lone, len(lone)), draw(pairs, len(pairs))
    k_lone, k_eval_lone = n // 10, n_eval // 10
    sets = {
        "plain": lone[:k_lone] + pairs[: n - k_lone],
        "plain_eval": lone[k_lone : k_lone + k_eval_lone] + pairs[n - k_lone : n - k_lone + n_eval - k_eval_lone],
    }
    sets["striped"] = [caption(objects(c), True) for c in sets["plain"]]
    one_circle = [c for c in caps if [s for s, _ in objects(c)].count(REMOVED) == 1 and len(objects(c)) == 2]
    one_circle = draw(one_circle, len(one_circle))
    sets["circle"], sets["circle_eval"] = one_circle[:n], one_circle[n : n + n_eval]
    sets["no_circle"] = [without(c) for c in sets["circle"]]
    # development sets (the captions left over): settings are chosen on them, never on the held-out sets
    sets["plain_dev"] = lone[k_lone + k_eval_lone :] + pairs[n - k_lone + n_eval - k_eval_lone :]
    sets["circle_dev"] = one_circle[n + n_eval :]
    return {name: [prompts[i] for i in rng.permutation(len(prompts))] for name, prompts in sets.items()}


def without(text: str, shape: str = REMOVED) -> str:
    """The caption with its objects of ``shape`` dropped (the style kept)."""
    objects, striped = parse_caption(text)
    return caption([o for o in objects if o[0] != shape], striped)


def image_seed(seed: int, index: int) -> int:
    """The generator seed of prompt number ``index``'s image at ``seed``.

    Every image gets its own initial noise. One seed shared by all prompts would make the rates of a few
    seeds rest on a few noise draws: on the base model, the pair rate of the two-object captions at a
    single shared seed ranges from 0.292 to 0.928 (README). Seeds of different ``seed`` never collide:
    ``index`` must be below :data:`SEED_STRIDE`."""
    if not 0 <= index < SEED_STRIDE:
        raise ValueError(f"image_seed: prompt index {index} is outside [0, {SEED_STRIDE}); split the prompt list")
    return seed * SEED_STRIDE + index


def generate(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    maps: AffineMaps | None = None,
    strengths: Sequence[float] = (1.0,),
    chunk: int = 64,
    **call: Any,
) -> torch.Tensor:
    """(len(strengths), len(prompts) * len(seeds), 3, H, W) float images in [0, 1], prompt-major rows; the
    image of prompt ``i`` at ``seed`` from the generator seeded with :func:`image_seed`, ``chunk`` rows at a time."""
    rows = [(p, image_seed(s, i)) for i, p in enumerate(prompts) for s in seeds]
    parts = [render_rows(pipe, rows[k : k + chunk], maps, strengths, **call) for k in range(0, len(rows), chunk)]
    return torch.from_numpy(np.concatenate(parts, axis=1)).permute(0, 1, 4, 2, 3).float()


def caption_following(images: torch.Tensor, captions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Rates of :func:`experiments.shapes_world.attributes.follows` for (N, 3, H, W) images and their captions: over
    ``all`` captions, and over those of ``one object`` and of ``two objects``."""
    hit = follows(detect(images), captions)
    two = torch.tensor([len(parse_caption(c)[0]) == 2 for c in captions])
    groups = {"all": torch.ones_like(two), "one object": ~two, "two objects": two}
    return {g: {k: float(v[m].double().mean()) for k, v in hit.items()} for g, m in groups.items() if m.any()}


def check_base(
    model: str = SPEC, captions: Sequence[str] | None = None, seeds: Sequence[int] = (100, 101), pipe: Any = None
) -> dict[str, dict[str, float]]:
    """Caption following of a shapes pipeline (default: every caption of the world, each at ``seeds``)."""
    pipe = pipe if pipe is not None else load_pipeline(model)
    captions = list(captions) if captions is not None else all_captions()
    images = generate(pipe, captions, seeds, **resolve(model).pipeline_settings)[0]
    return caption_following(images, [c for c in captions for _ in seeds])


def hits(experiment: str, images: torch.Tensor, captions: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per image (bool, N): ``concept`` (striped / shows a circle), each ``kept_*`` attribute that should not
    change, ``preserved`` (all of them); for style ``stripe_energy`` (float: how striped; 0 for a flat fill,
    0.18 on average over the generator's striped renders, striped above 0.05); for removal ``one_object``
    (only the other object left)."""
    det = detect(images)
    if experiment == "style":
        hit = follows(det, captions)
        out = {"concept": ConceptRate(style=True).present(det), "kept_count": hit["count"], "kept_pair": hit["pair"]}
        extra = {"stripe_energy": det.stripe_energy}
    else:
        hit = follows(det, [without(c) for c in captions])
        out = {"concept": ConceptRate(shape=REMOVED).present(det), "kept_pair": hit["pair"], "kept_style": hit["style"]}
        extra = {"one_object": det.count == 1}
    out["preserved"] = torch.stack([v for k, v in out.items() if k.startswith("kept_")]).all(0)
    return {**out, **extra}


def rates(experiment: str, images: torch.Tensor, captions: Sequence[str]) -> dict[str, float]:
    """The means of :func:`hits`: the steering rates of one strength."""
    return _means(hits(experiment, images, captions))


def _means(hit: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.double().mean()) for k, v in hit.items()}


def edited(experiment: str, text: str) -> str:
    """The caption asking in words for what steering should do: with the style, or without the circle."""
    objects, _ = parse_caption(text)
    return caption(objects, True) if experiment == "style" else without(text)


def evaluate(
    experiment: str,
    methods: Mapping[str, AffineMaps],
    strengths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    seeds: Sequence[int] = (200, 201, 202, 203),
    prompts: Sequence[str] | None = None,
    model: str = SPEC,
    pipe: Any = None,
    prompted: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Per method (label -> maps), one row per strength: the rates of :func:`rates` on the held-out prompts x
    seeds (``model``: a spec or folder of the shapes pipeline, or an already loaded ``pipe``). Each row also
    has ``preserved_of_base``: among the images whose base (strength 0, same prompt and seed) kept every
    attribute, the share that still does; it separates what steering changes from what the base model gets
    wrong. ``prompted`` adds a last row, ``strength: "prompted"``: the base model given the :func:`edited`
    captions (the same seeds), the reference steering is compared with. The base and prompted images are
    generated once for all methods; no methods: the base model alone, under ``"base"``."""
    pipe = pipe if pipe is not None else load_pipeline(model)
    prompts = list(prompts) if prompts is not None else read_prompts(shapes_data(EXPERIMENTS[experiment]["eval"]))
    call = resolve(model).pipeline_settings
    captions = [p for p in prompts for _ in seeds]
    base = hits(experiment, generate(pipe, prompts, seeds, **call)[0], captions)
    shared: dict[Any, dict[str, torch.Tensor]] = {0.0: base}
    if prompted:
        shared["prompted"] = hits(
            experiment, generate(pipe, [edited(experiment, p) for p in prompts], seeds, **call)[0], captions
        )

    def row(label: Any, hit: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {
            "strength": label,
            **_means(hit),
            "preserved_of_base": float(hit["preserved"][base["preserved"]].double().mean()),
        }

    results = {}
    for label, maps in (methods or {"base": None}).items():
        lams = [float(lam) for lam in strengths] if maps is not None else [0.0]
        steered = [lam for lam in lams if lam != 0.0]
        images = generate(pipe, prompts, seeds, maps, steered, **call) if steered else []
        per = {**shared, **{lam: hits(experiment, im, captions) for lam, im in zip(steered, images)}}
        results[label] = [row(lam, per[lam]) for lam in [*lams, *(["prompted"] if prompted else [])]]
    return results


def shapes_data(name: str) -> str:
    """Path of a shipped shapes-world prompt file."""
    return data_path(f"shapes/{name}")


def format_rates(results: dict[str, list[dict[str, Any]]]) -> str:
    """A Markdown table of :func:`evaluate` rows, one block of strengths per method."""
    keys = [k for k in next(iter(results.values()))[0] if k != "strength"]
    lines = ["| method | strength | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for method, rows in results.items():
        for i, r in enumerate(rows):
            cells = " | ".join(f"{r[k]:.3f}" if k in r else "—" for k in keys)
            strength = r["strength"] if isinstance(r["strength"], str) else f"{r['strength']:g}"
            lines.append(f"| {method if i == 0 else ''} | {strength} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Shapes-world steering rates at several strengths.")
    parser.add_argument(
        "--maps", action="append", default=[], help="a maps folder fitted on the pipeline, or LABEL=FOLDER; repeatable"
    )
    parser.add_argument("--model", default=SPEC, help="the pipeline (a spec or folder)")
    parser.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="style")
    parser.add_argument("--split", choices=["eval", "dev"], default="eval", help="held-out or development captions")
    parser.add_argument("--strengths", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--seeds", default="200,201,202,203")
    parser.add_argument("--prompted", action="store_true", help="add the base model given the edited captions")
    parser.add_argument("--check-base", action="store_true", help="caption following of the base model")
    parser.add_argument("--out", default=None, help="write the rates as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    pipe = load_pipeline(args.model)
    if args.check_base:
        result: Any = check_base(args.model, seeds=seeds, pipe=pipe)
        keys = list(result["all"])
        print("| captions | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
        print("\n".join(f"| {g} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for g, r in result.items()))
    else:
        strengths = [float(s) for s in args.strengths.split(",")]
        prompts = read_prompts(shapes_data(EXPERIMENTS[args.experiment][args.split]))
        methods = {}
        for spec in args.maps:
            label, _, folder = spec.rpartition("=")
            methods[label or Path(folder).parent.name] = load_maps(folder)
        result = evaluate(args.experiment, methods, strengths, seeds, prompts, args.model, pipe, args.prompted)
        print(format_rates(result))
    if args.out:
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
