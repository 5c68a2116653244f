"""The trained shapes-world pipeline (``offline:shapes-sd``) follows its captions, and the seeded, resumable
training script that made it retraces the committed run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from experiments.shapes_world import train_pipeline as shapes_train
from experiments.shapes_world.evaluate import all_captions, check_base
from lineas.core.errors import ConfigError
from lineas.models.diffusion import DiffusionPipe
from lineas.models.shapes_sd import SPEC, shapes_sd_dir
from lineas.models.sources import resolve


@pytest.mark.slow  # 140 images
def test_the_base_model_follows_its_captions():
    """Captions at seeds no fit or evaluation uses, each image its own noise: every one-object caption (the >= 90%
    target holds), and one two-object caption in six. Pairs fall short of 90% (README: 0.795-0.865 per attribute
    on the two-object captions; 0.750-0.818 measured here, 44 images); their floors guard against a regression."""
    lone = [c for c in all_captions() if " and " not in c]
    rates = check_base(SPEC, lone, seeds=[7, 8, 9, 10])["all"]
    assert min(rates[k] for k in ("count", "shape", "colour", "style")) >= 0.9, rates
    pairs = check_base(SPEC, [c for c in all_captions() if " and " in c][::6], seeds=[7])["all"]
    assert pairs["style"] >= 0.95 and min(pairs[k] for k in ("count", "shape", "colour")) >= 0.65, pairs


def _tiny(work: Path, **kw) -> shapes_train.TrainConfig:
    cfg = dict(vae_steps=3, vae_batch=4, unet_steps=4, unet_batch=4, warmup=2, save_every=2, log_every=100)
    cfg.update(scale_samples=16, finetune_steps=(2, 3), finetune_lr=(1e-4, 5e-5))
    return shapes_train.TrainConfig(**{**cfg, **kw})


@pytest.mark.slow  # trains, is killed and resumes
def test_training_is_seeded_and_a_killed_run_resumes_exactly(tmp_path, monkeypatch):
    straight = shapes_train.train(_tiny(tmp_path), tmp_path / "a", out=tmp_path / "out")
    with pytest.raises(ConfigError, match="fine-tuning started from denoiser step 4"):
        shapes_train.train(_tiny(tmp_path, unet_steps=6), tmp_path / "a")  # fine-tuning would overwrite the extension
    real = shapes_train.batch_rng

    # killed mid-denoiser, then at the start of the second fine-tune phase (after the checkpoint of the first)
    for dies_at in (3, 2 * shapes_train.FINETUNE_STREAM):

        def dies(cfg, stage, step, dies_at=dies_at):
            if stage == "unet" and step == dies_at:
                raise KeyboardInterrupt
            return real(cfg, stage, step)

        monkeypatch.setattr(shapes_train, "batch_rng", dies)
        with pytest.raises(KeyboardInterrupt):
            shapes_train.train(_tiny(tmp_path), tmp_path / "b")
    monkeypatch.setattr(shapes_train, "batch_rng", real)
    assert torch.load(tmp_path / "b" / "finetune.pt", weights_only=True)["step"] == 2
    resumed = shapes_train.train(_tiny(tmp_path), tmp_path / "b")
    for name in ("unet", "text_encoder", "vae"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert record["config"]["unet_steps"] == 4 and record["parameters"]["unet"] > 1e6
    assert record["config"]["finetune_steps"] == [2, 3] and record["finetune"]["wall_s"] > 0
    assert resolve(str(tmp_path / "out")).pipeline_settings["num_inference_steps"] > 1


@pytest.mark.slow  # ~45 s on one thread
def test_the_training_script_retraces_the_committed_run(tmp_path, capsys):
    """The default settings' first 25 denoiser steps, on the committed VAE, log the committed run's loss (its
    ``training_log.txt``): same initial weights, batches, noise and updates. The full run is the README's command."""
    committed = re.search(r"unet step 25: loss (\S+)", (shapes_sd_dir() / "training_log.txt").read_text())
    vae = DiffusionPipe(SPEC).pipe.vae
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the committed run's setting: the same reduction order
    try:
        shapes_train.train_denoiser(shapes_train.TrainConfig(unet_steps=25), tmp_path, vae)
    finally:
        torch.set_num_threads(threads)
    ours = re.search(r"unet step 25: loss (\S+)", capsys.readouterr().out)
    assert abs(float(ours.group(1)) - float(committed.group(1))) <= 1e-4, (ours.group(0), committed.group(0))


def test_an_extended_run_follows_each_plan_until_it_was_extended():
    cfg = shapes_train.TrainConfig(unet_steps=20000, replan_at=(3200, 7000))
    plan = [shapes_train.unet_lr_at(cfg, s) for s in (100, 3199, 3200, 6999, 7000, 19999)]
    lr = cfg.unet_lr, cfg.warmup, cfg.final_lr_fraction
    assert plan == [
        shapes_train.lr_at(100, 3200, *lr),
        shapes_train.lr_at(3199, 3200, *lr),
        shapes_train.lr_at(3200, 7000, *lr),
        shapes_train.lr_at(6999, 7000, *lr),
        shapes_train.lr_at(7000, 20000, *lr),
        shapes_train.lr_at(19999, 20000, *lr),
    ]
    # the end of each plan is its floor; the next plan starts higher again
    assert plan[1] == pytest.approx(cfg.unet_lr * cfg.final_lr_fraction, rel=1e-3)
    assert plan[2] > plan[1] and plan[4] > plan[3]
    assert shapes_train._list_of(int)("3200,7000") == cfg.replan_at  # --replan-at 3200,7000


def test_the_fine_tune_phases_each_decay_from_their_peak_on_batches_no_other_step_draws():
    cfg = shapes_train.TrainConfig()
    assert cfg.finetune_steps == (2000, 4000) and cfg.finetune_lr == (3e-4, 2e-4)  # the committed run
    plan = [shapes_train.finetune_plan(cfg, s) for s in (0, 1999, 2000, 5999)]
    stream = shapes_train.FINETUNE_STREAM
    assert [b for b, _ in plan] == [stream, stream + 1999, 2 * stream, 2 * stream + 3999]
    assert [lr for _, lr in plan] == [
        3e-4,
        shapes_train.lr_at(1999, 2000, 3e-4, 0, cfg.final_lr_fraction),
        2e-4,
        shapes_train.lr_at(3999, 4000, 2e-4, 0, cfg.final_lr_fraction),
    ]
    assert plan[1][1] == pytest.approx(3e-5, rel=1e-4) and plan[3][1] == pytest.approx(2e-5, rel=1e-4)
    assert cfg.unet_steps < stream and max(cfg.finetune_steps) < stream  # no two steps draw the same batch
    with pytest.raises(ConfigError, match="one learning rate per fine-tune phase"):
        shapes_train.TrainConfig(finetune_steps=(10, 10), finetune_lr=(1e-4,))
