"""The control-preserving term of LinEASModule: a direct computation of it, and fits that keep held-out control
prompts closer to the base model than fits without it."""

from __future__ import annotations

import pytest
import torch

from lineas.core.errors import ConfigError
from lineas.core.files import data_path
from lineas.datamodules import PromptPairDataModule, split_prompts
from lineas.tasks.gate import site_samples
from lineas.training.module import LinEASModule, frozen_base_expected
from tests.helpers import quiet_trainer

SOURCE, TARGET = data_path("toxicity/toxic.txt"), data_path("tiny/polite.txt")
CONTROL = data_path("neutral/control.txt")


def fit(tiny_llama, weight: float | None) -> LinEASModule:
    torch.manual_seed(0)
    data = PromptPairDataModule(SOURCE, TARGET, collate_fn=tiny_llama.collate, batch_size=8, num_fit=32)
    control = {} if weight is None else {"control": CONTROL, "control_weight": weight}
    module = LinEASModule(tiny_llama, sites="mlp_out", lr=3e-2, normalize=True, **control)
    trainer = quiet_trainer(15, limit_val_batches=0)
    with frozen_base_expected():
        trainer.fit(module, datamodule=data)
    return module


@pytest.fixture(scope="module")
def fits(tiny_llama):
    return {"without": fit(tiny_llama, None), "with": fit(tiny_llama, 10.0)}


def change(tiny_llama, module: LinEASModule, texts: list[str]) -> float:
    """Mean over sites and dimensions of the variance-normalised squared change the maps make to ``texts``."""
    base = site_samples(tiny_llama, module.sites, texts)
    with module.maps.apply(tiny_llama.model):
        steered = site_samples(tiny_llama, module.sites, texts)
    per_site = [((s - b) ** 2 / b.var(0, unbiased=False)).mean() for s, b in zip(steered, base)]
    return float(torch.stack(per_site).mean())


def test_control_term_is_the_normalised_change_of_the_control_activations(fits, tiny_llama):
    module = fits["with"]
    with torch.no_grad():
        got = float(module.control_change())
    assert got == pytest.approx(change(tiny_llama, module, module.control["fit"]), rel=1e-3)
    assert module.maps.info["control"] == {"prompts": 32, "weight": 10.0}
    assert fits["without"].maps.info["control"] is None


def test_the_term_keeps_held_out_control_prompts_closer_to_the_base(fits, tiny_llama):
    heldout = split_prompts(CONTROL, 32, side="control")["heldout"]
    kept = change(tiny_llama, fits["with"], heldout)
    free = change(tiny_llama, fits["without"], heldout)
    assert kept < 0.5 * free, (kept, free)


def test_refuses_a_negative_weight(tiny_llama):
    with pytest.raises(ConfigError, match="control_weight=-1"):
        LinEASModule(tiny_llama, sites="mlp_out", control=CONTROL, control_weight=-1.0)
    with pytest.raises(ConfigError, match="control_weight=-1"):  # without control prompts too
        LinEASModule(tiny_llama, sites="mlp_out", control_weight=-1.0)
    with pytest.raises(ConfigError, match="control_weight=nan"):
        LinEASModule(tiny_llama, sites="mlp_out", control=CONTROL, control_weight=float("nan"))
