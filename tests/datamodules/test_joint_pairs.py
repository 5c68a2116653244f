"""Joint fits: one concept is the ordinary fit; with two, the loss is the sum of each concept's W2 term,
computed here by hand (sorted samples, variance-normalised)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lineas.core.errors import ConfigError
from lineas.core.files import data_path
from lineas.core.prompts import read_prompts
from lineas.datamodules import JointPromptPairs, PromptPairDataModule
from lineas.training.module import LinEASModule, frozen_base_expected

N = 6  # prompts a side and concept; every step's batch holds all of them, whatever the order


def prompts(rel: str) -> list[str]:
    return read_prompts(data_path(rel))[:N]


TOXICITY = (prompts("toxicity/toxic.txt"), prompts("toxicity/nontoxic.txt"))
SENTIMENT = (prompts("sentiment/negative.txt"), prompts("sentiment/positive.txt"))


class FirstLoss(L.Callback):
    """Keeps the loss of the first step (the maps are still identity then)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.loss = outputs["loss"].detach()


def run(module: LinEASModule, datamodule: L.LightningDataModule, steps: int, *callbacks: L.Callback) -> None:
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        callbacks=list(callbacks),
    )
    with frozen_base_expected():
        trainer.fit(module, datamodule=datamodule)


def test_one_concept_is_the_ordinary_fit(tiny_llama):
    fitted = []
    for cls in (PromptPairDataModule, JointPromptPairs):
        L.seed_everything(0, verbose=False)
        dm = cls(*TOXICITY, collate_fn=tiny_llama.collate, batch_size=4, num_fit=N)
        module = LinEASModule(tiny_llama, sites="mlp_out", lr=3e-2, normalize=True)
        run(module, dm, 3)
        fitted.append(module.maps.state_tensors())
    assert fitted[0].keys() == fitted[1].keys()
    for key in fitted[0]:
        assert torch.equal(fitted[0][key], fitted[1][key]), key
    assert (fitted[0]["model.layers.0.mlp.down_proj.beta"].abs() > 0).any()  # the maps moved


def w2_by_hand(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per dimension, mean squared difference of the sorted samples (equal counts), over the target variance."""
    var = target.var(0, unbiased=False)
    var = var.clamp_min(1e-6 * var.mean() + 1e-12)
    return ((source.sort(0).values - target.sort(0).values) ** 2).mean(0) / var


def test_joint_loss_sums_the_two_concepts_w2(tiny_llama):
    L.seed_everything(0, verbose=False)
    dm = JointPromptPairs(
        *TOXICITY,
        collate_fn=tiny_llama.collate,
        batch_size=N,
        num_fit=N,
        concepts=[{"source": SENTIMENT[0], "target": SENTIMENT[1]}],
    )
    module = LinEASModule(tiny_llama, sites="mlp_out", normalize=True)
    first = FirstLoss()
    run(module, dm, 1, first)
    terms = []
    for source, target in (TOXICITY, SENTIMENT):
        src = module.collect([tiny_llama.collate(source)], with_maps=False)  # identity maps at step 0
        tgt = module.collect([tiny_llama.collate(target)], with_maps=False)
        terms.append(torch.stack([w2_by_hand(s, t).mean() for s, t in zip(src, tgt)]).mean())
    assert first.loss.item() == pytest.approx((terms[0] + terms[1]).item(), rel=1e-5)
    assert min(t.item() for t in terms) > 0.01 * first.loss.item()  # both terms count


def test_refusals(tiny_llama):
    with pytest.raises(ConfigError, match="give a list of \\{source: FILE, target: FILE\\}"):
        JointPromptPairs(*TOXICITY, num_fit=N, concepts=[{"source": SENTIMENT[0]}])
    dm = JointPromptPairs(
        *TOXICITY, tiny_llama.collate, num_fit=N, concepts=[dict(zip(("source", "target"), SENTIMENT))]
    )
    module = LinEASModule(tiny_llama, sites="mlp_out", estimator="mean_shift")
    with pytest.raises(ConfigError, match="a joint fit needs lineas"):
        run(module, dm, 0)
