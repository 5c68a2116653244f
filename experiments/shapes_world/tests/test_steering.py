"""Shapes-world steering: the shipped prompt sets, the rates on generator images with known labels, and the
recipes on the trained pipeline (``offline:shapes-sd``) against their strength-1 targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.shapes_world.evaluate import EXPERIMENTS, REMOVED, prompt_sets, rates, shapes_data, without
from experiments.shapes_world.world import parse_caption, scenes_for_captions
from lineas.core.prompts import read_prompts


def test_shipped_prompt_sets_are_the_seeded_ones_and_disjoint():
    sets = prompt_sets()
    for name, prompts in sets.items():
        assert read_prompts(shapes_data(f"{name}.txt")) == prompts, name
    assert {len(p) for p in sets.values()} == {40, 48, 56}
    # held-out and development captions show other scenes; the targets are the sources' captions with the style /
    # without the circle
    for a, b in [("plain", "plain_eval"), ("plain", "plain_dev"), ("plain_eval", "plain_dev")]:
        assert not set(sets[a]) & set(sets[b]), (a, b)
    for a, b in [("circle", "circle_eval"), ("circle", "circle_dev"), ("circle_eval", "circle_dev")]:
        assert not set(sets[a]) & set(sets[b]), (a, b)
    assert sorted(sets["striped"]) == sorted(c + ", striped" for c in sets["plain"]) != sets["striped"]
    assert not any(parse_caption(c)[1] for c in sets["plain"] + sets["plain_eval"] + sets["plain_dev"])
    for c in sets["circle"] + sets["circle_eval"] + sets["circle_dev"]:
        shapes = [s for s, _ in parse_caption(c)[0]]
        assert len(shapes) == 2 and shapes.count(REMOVED) == 1
    assert sorted(sets["no_circle"]) == sorted(without(c) for c in sets["circle"])
    assert not any(REMOVED in c for c in sets["no_circle"])
    assert without("a red circle and a blue square, striped") == "a blue square, striped"


def test_rates_read_generator_images_exactly():
    rng = np.random.default_rng(0)
    plain = read_prompts(shapes_data(EXPERIMENTS["style"]["eval"]))
    base = rates("style", scenes_for_captions(plain, rng).render(), plain)
    styled = rates("style", scenes_for_captions([c + ", striped" for c in plain], rng).render(), plain)
    base_energy, styled_energy = base.pop("stripe_energy"), styled.pop("stripe_energy")
    assert base == {"concept": 0.0, "kept_count": 1.0, "kept_pair": 1.0, "preserved": 1.0}
    assert styled == {"concept": 1.0, "kept_count": 1.0, "kept_pair": 1.0, "preserved": 1.0}
    # flat fills have no stripe energy; the world's stripes (period 6, shade 0.45) 0.184 on these renders
    assert abs(base_energy) < 0.01 and 0.15 < styled_energy < 0.22, (base_energy, styled_energy)
    circles = read_prompts(shapes_data(EXPERIMENTS["removal"]["eval"]))
    base = rates("removal", scenes_for_captions(circles, rng).render(), circles)
    removed = rates("removal", scenes_for_captions([without(c) for c in circles], rng).render(), circles)
    assert base["concept"] == 1.0 and base["preserved"] == 1.0 and base["one_object"] == 0.0
    assert removed == {"concept": 0.0, "kept_pair": 1.0, "kept_style": 1.0, "preserved": 1.0, "one_object": 1.0}
    # a wrong style on every image: nothing preserved
    wrong = rates("removal", scenes_for_captions([_flip(without(c)) for c in circles], rng).render(), circles)
    assert wrong["kept_style"] == 0.0 and wrong["preserved"] == 0.0


def _flip(text: str) -> str:
    return text.removesuffix(", striped") if text.endswith(", striped") else text + ", striped"


TARGETS = {"shapes_style": "style", "shapes_concept_removal": "removal"}
SHIPPED = Path(__file__).resolve().parents[1] / "maps"  # maps/RECIPE: the recipe's fit, and its config
FIT_KEYS = ("seed", "backbone", "data", "module", "trainer")  # what decides the maps (not callbacks, paths)
DISPLAY = ("enable_progress_bar", "enable_model_summary")  # trainer keys that only change what is printed


def _fit_settings(cfg, key):
    node = OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
    return {k: v for k, v in node.items() if k not in DISPLAY} if key == "trainer" else node


@pytest.mark.slow  # 208 images, a merged export and 16 more
@pytest.mark.parametrize("recipe", sorted(TARGETS))
def test_recipe_maps_steer_held_out_captions_and_seeds(recipe, tmp_path):
    """The maps the recipe fitted (``python -m lineas.train recipe=RECIPE``, committed with the run's config
    under ``maps/RECIPE``; a fit costs ~5 min on a core, so the suite reads them rather than fitting again),
    then the rates at strengths 0 and 1 on the held-out captions at two of the README's evaluation seeds
    (the fit and the settings' choice never saw them); and the merged pipeline draws the live maps' images."""
    from experiments.shapes_world.evaluate import evaluate, generate
    from lineas.core.maps import load_maps
    from lineas.models.diffusion import load_pipeline
    from lineas.models.sources import resolve
    from lineas.tasks.export import export
    from tests.helpers import compose_cfg

    fitted, now = OmegaConf.load(SHIPPED / recipe / "config.yaml"), compose_cfg(f"recipe={recipe}")
    for key in FIT_KEYS:
        assert _fit_settings(fitted, key) == _fit_settings(now, key), (
            f"recipes/{recipe}.yaml changed its {key}: fit it again (python -m lineas.train recipe={recipe} "
            f"output_dir=RUN) and copy RUN/maps and RUN/.hydra/config.yaml to {SHIPPED / recipe}"
        )
    maps = load_maps(SHIPPED / recipe / "maps")
    experiment = TARGETS[recipe]
    pipe = load_pipeline("offline:shapes-sd")
    base, steered = evaluate(experiment, {"LinEAS": maps}, [0.0, 1.0], seeds=[200, 201], pipe=pipe)["LinEAS"]
    print(f"{recipe}: strength 0 {base}; strength 1 {steered}")
    # Measured at these seeds with the committed maps (each image its own noise): style 0.000 -> 0.812 striped,
    # preserved_of_base 0.843; removal 0.875 -> 0.240 images with a circle (3.65x fewer), preserved_of_base
    # 0.701. Not all strength-1 targets are met on the held-out captions (README: the 5x cut and 90%
    # preservation are not): these floors guard against regressions.
    if experiment == "style":
        assert base["concept"] <= 0.05 and steered["concept"] >= 0.75, (base, steered)
        assert steered["preserved_of_base"] >= 0.75, steered
    else:
        assert base["concept"] >= 0.7 and steered["concept"] <= base["concept"] / 3, (base, steered)
        assert steered["preserved_of_base"] >= 0.65, steered
    # merged at strength 1 (a plain diffusers folder) == live maps at strength 1, in float
    prompts = read_prompts(shapes_data(EXPERIMENTS[experiment]["eval"]))[:8]
    call = resolve("offline:shapes-sd").pipeline_settings
    live = generate(pipe, prompts, [200], maps, [1.0], **call)[0]
    merged = generate(load_pipeline(str(export(maps, tmp_path / "merged"))), prompts, [200], **call)[0]
    assert (live - merged).abs().max() < 1e-4
