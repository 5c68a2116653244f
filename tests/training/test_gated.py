"""GatedLinEASModule (end-to-end gate): probes initialised as the post hoc fit makes them, then trained with the
maps against W2 on the source plus the control-preserving term."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lineas.core.errors import ConfigError
from lineas.core.files import data_path
from lineas.datamodules import PromptPairDataModule, split_prompts
from lineas.tasks.gate import fit_posthoc, site_samples
from lineas.training.gated import GatedLinEASModule
from lineas.training.module import frozen_base_expected
from tests.helpers import quiet_trainer

SOURCE, TARGET = data_path("toxicity/toxic.txt"), data_path("tiny/polite.txt")
CONTROL = data_path("neutral/control.txt")


class GateSnapshots(L.Callback):
    """The gate's probe weights when training starts (after the probes are fitted) and when it ends."""

    def __init__(self) -> None:
        self.weights: dict[str, list[torch.Tensor]] = {}

    def _keep(self, key: str, module: GatedLinEASModule) -> None:
        self.weights[key] = [w.detach().clone() for w in module.maps.gate.weight]

    def on_train_start(self, trainer, module) -> None:
        self._keep("start", module)

    def on_train_end(self, trainer, module) -> None:
        self._keep("end", module)


@pytest.fixture(scope="module")
def fitted(tiny_llama):
    torch.manual_seed(0)
    data = PromptPairDataModule(SOURCE, TARGET, collate_fn=tiny_llama.collate, batch_size=8, num_fit=32)
    module = GatedLinEASModule(tiny_llama, control=CONTROL, sites="mlp_out", lr=3e-2, threshold=0.0)
    snaps = GateSnapshots()
    trainer = quiet_trainer(3, check_val_every_n_epoch=None, val_check_interval=3, callbacks=[snaps])
    with frozen_base_expected():
        trainer.fit(module, datamodule=data)
    return module, data, snaps, trainer


def test_probes_start_where_the_post_hoc_fit_puts_them(fitted, tiny_llama):
    module, data, snaps, _ = fitted
    prompts = {"source": data.prompts["source"], "control": split_prompts(CONTROL, 32, side="control")}
    posthoc = fit_posthoc(tiny_llama, module.maps, prompts, k=5, threshold=0.0)
    for start, ref in zip(snaps.weights["start"], posthoc.weight):
        torch.testing.assert_close(start, ref.detach(), rtol=1e-4, atol=1e-5)
    assert module.maps.gate.states == ["gated"] * 4  # threshold 0: every site gated


def test_the_gate_trains_with_the_maps(fitted):
    module, _, snaps, trainer = fitted
    moved = [float((e - s).abs().max()) for s, e in zip(snaps.weights["start"], snaps.weights["end"])]
    assert max(moved) > 1e-4, moved
    assert "train/control" in trainer.logged_metrics
    maps = module.fitted_maps()
    assert maps.gated and maps.gate.info["fit"] == "end_to_end"
    assert all(0.0 <= a <= 1.0 for a in maps.gate.accuracy)


def test_control_term_is_the_normalised_change_of_the_control_activations(fitted, tiny_llama):
    module, *_ = fitted
    texts = split_prompts(CONTROL, 32, side="control")["fit"]
    base = site_samples(tiny_llama, module.sites, texts)
    with torch.no_grad():
        got = module.control_change()
        with module.maps.apply(tiny_llama.model):  # the capture sees the mapped outputs
            steered = site_samples(tiny_llama, module.sites, texts)
    var = [b.var(0, unbiased=False) for b in base]
    expected = torch.stack([((s - b) ** 2 / v).mean() for s, b, v in zip(steered, base, var)]).mean()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-6)
    states = list(module.maps.gate.states)
    module.maps.gate.states = ["off"] * 4
    try:
        with torch.no_grad():
            assert float(module.control_change()) == 0.0  # gate 0 everywhere: the control set is untouched
    finally:
        module.maps.gate.states = states


def test_refuses_a_control_set_without_held_out_prompts(tiny_llama):
    with pytest.raises(ConfigError, match="lower control_fit"):
        GatedLinEASModule(tiny_llama, control=CONTROL, control_fit=72, sites="mlp_out")
