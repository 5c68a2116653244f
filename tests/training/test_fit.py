"""``lineas.fit`` (plain arguments, no Hydra): the recipe defaults; a bfloat16 base with float32 maps
(``bf16-mixed``); low-precision maps are refused."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import lineas
from lineas.cli.train import train
from lineas.conf import register
from lineas.core.files import data_path
from lineas.training.job import check_config, train_config
from tests.helpers import compose_cfg

LR = 1e-2


class Trajectory(L.Callback):
    """The maps (omega then beta, flattened) after every optimizer step."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        assert all(p.dtype == torch.float32 for p in module.maps.parameters())
        self.states.append(torch.cat([p.detach().flatten().clone() for p in module.maps.parameters()]))


def fit(dtype: str, precision: str) -> tuple[lineas.LinEASModule, Trajectory]:
    backbone = lineas.CausalLM("tiny:llama", dtype=dtype)
    trajectory = Trajectory()
    maps = lineas.fit(
        backbone,
        data_path("toxicity/toxic.txt"),
        data_path("tiny/polite.txt"),
        "mlp_out",
        steps=6,
        lr=LR,
        num_fit=16,
        batch_size=16,
        precision=precision,
        callbacks=[trajectory],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert next(backbone.model.parameters()).dtype == getattr(torch, dtype)
    return maps, trajectory


def test_bf16_base_moves_float32_maps_in_small_steps():
    maps, low = fit("bfloat16", "bf16-mixed")
    _, full = fit("float32", "32-true")
    assert all(p.dtype == torch.float32 for p in maps.parameters())
    start = torch.cat([torch.ones(sum(maps.dims)), torch.zeros(sum(maps.dims))])
    steps = torch.stack([b - a for a, b in zip([start, *low.states], low.states)]).abs().amax(1)
    # Adam's first step moves each coordinate by exactly lr; later ones by about the (cosine-decayed) lr.
    assert abs(steps[0].item() - LR) < 1e-3 * LR, steps
    assert torch.isfinite(steps).all() and (steps > 0).all() and (steps < 3 * LR).all(), steps
    # The bf16 base steers like the float32 one, up to bf16 rounding of its activations.
    moved_low, moved_full = low.states[-1] - start, full.states[-1] - start
    cosine = torch.nn.functional.cosine_similarity(moved_low, moved_full, dim=0)
    assert cosine > 0.9, cosine


def test_bf16_true_precision_is_refused():
    with pytest.raises(lineas.FitError, match="bf16-mixed"):
        fit("bfloat16", "bf16-true")


def test_python_api_matches_recipe_defaults_and_builds_the_fit_the_command_line_builds(tmp_path):
    """One builder: ``lineas.fit`` with the tiny recipe's settings writes the maps and summary a run writes, and
    its maps are those of ``python -m lineas.train recipe=tiny``, number for number, with the same record."""
    maps = lineas.fit(
        "tiny:llama",
        data_path("toxicity/toxic.txt"),
        data_path("tiny/polite.txt"),
        sites="mlp_out",
        steps=8,
        lr=3e-2,
        num_fit=32,
        output_dir=tmp_path / "api",
        enable_progress_bar=False,
    )
    assert maps.info["steps"] == 8
    summary = json.loads((tmp_path / "api" / "fit_summary.json").read_text())["heldout_w2"]["mean"]
    assert summary["after"] < summary["before"]
    steps = ["trainer.max_steps=8", "trainer.val_check_interval=4", "trainer.enable_progress_bar=false"]
    train(compose_cfg("recipe=tiny", f"output_dir={tmp_path / 'cli'}", *steps))
    saved, cli = lineas.load_maps(tmp_path / "api" / "maps"), lineas.load_maps(tmp_path / "cli" / "maps")
    for a, b, c in zip([*maps.omega, *maps.beta], [*saved.omega, *saved.beta], [*cli.omega, *cli.beta]):
        assert torch.equal(a.detach(), b.detach()) and torch.equal(a.detach(), c.detach())
    assert maps.info == cli.info


def test_train_config_types_its_values_and_passes_other_trainer_arguments():
    with pytest.raises(lineas.ConfigError, match=r"^trainer.enable_progress_bar='maybe': give true or false$"):
        check_config(compose_cfg("output_dir=x", "trainer.enable_progress_bar=maybe"))
    with pytest.raises(lineas.ConfigError, match=r"^foo: lineas.train has no such setting"):
        check_config(compose_cfg("output_dir=x", "+foo=1"))
    cfg = check_config(compose_cfg("output_dir=x", "trainer.max_steps='7'", "+trainer.gradient_clip_algorithm=norm"))
    assert cfg.trainer.max_steps == 7 and cfg.trainer.gradient_clip_algorithm == "norm"


def test_the_config_of_a_fit_composes_inside_another_hydra_context_and_leaves_it_as_it_was():
    """``lineas.fit`` called from a user's Hydra app: Hydra holds one config search at a time."""
    register()
    with initialize_config_module("lineas.conf", version_base="1.3"):
        before = GlobalHydra.instance().hydra
        assert train_config("output_dir=x", "recipe=tiny").backbone.model == "tiny:llama"
        assert GlobalHydra.instance().hydra is before
    assert not GlobalHydra.instance().is_initialized()
