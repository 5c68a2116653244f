"""``lineas.fit`` (plain arguments, no Hydra): the recipe defaults; a bfloat16 base with float32 maps
(``bf16-mixed``); low-precision maps are refused."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

import lineas
from lineas.core.files import data_path

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


def test_python_api_matches_recipe_defaults(tmp_path):
    maps = lineas.fit(
        "tiny:llama",
        data_path("toxicity/toxic.txt"),
        data_path("tiny/polite.txt"),
        sites="mlp_out",
        steps=15,
        lr=3e-2,
        num_fit=32,
        output_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert maps.info["steps"] == 15
    summary = json.loads((tmp_path / "fit_summary.json").read_text())["heldout_w2"]["mean"]
    assert summary["after"] < summary["before"]
    loaded = lineas.load_maps(tmp_path / "maps")
    for a, b in zip(maps.beta, loaded.beta):
        assert torch.equal(a.detach(), b.detach())
