"""Resuming a fit: checked against what the checkpoint was fitted on, exact after a kill, defined when extended."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import lineas
from lineas.cli.train import train
from lineas.training.resume import read_checkpoint, replan_cosine
from tests.helpers import ROOT, compose_cfg, run_cli

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    train(
        compose_cfg(
            "recipe=tiny",
            f"output_dir={out}",
            "trainer.max_steps=20",
            "callbacks.checkpoint.every_n_train_steps=10",
            *QUIET,
        )
    )
    return out


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("module.sites=attn_out", "sites"),
        ("backbone.model=tiny:gpt2", "base_model"),
        ("data.num_fit=24", "data"),
        ("module.pooling=token", "pooling"),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_fit(tiny_run, tmp_path, override, field):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    with pytest.raises(lineas.ConfigError, match=rf"fitted with {field} = .* this run has {field} = "):
        train(
            compose_cfg(
                "recipe=tiny", f"output_dir={tmp_path}", f"resume={ckpt}", "trainer.max_steps=30", override, *QUIET
            )
        )


def test_checkpoint_records_what_it_was_fitted_on(tiny_run):
    record = read_checkpoint(tiny_run / "checkpoints" / "last.ckpt")["lineas"]
    assert record["base_model"] == "tiny:llama" and record["model_type"] == "llama"
    assert record["sites"] == [f"model.layers.{i}.mlp.down_proj" for i in range(4)] and record["dims"] == [64] * 4
    assert len(record["data"]) == 64 and record["pooling"] == "mean" and record["estimator"] == "lineas"


@pytest.mark.slow  # spawns a process
def test_unreadable_checkpoint_is_one_clear_error(tmp_path, tiny_run):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes((tiny_run / "checkpoints" / "last.ckpt").read_bytes()[:500])  # truncated
    proc = run_cli("lineas.train", "recipe=tiny", f"resume={bad}", f"output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lineas.")]
    assert len(lines) == 1 and f"resume={bad}: not a readable lineas checkpoint" in lines[0]
    assert "Traceback" not in proc.stderr and "weights_only=False" not in proc.stderr


def test_extending_a_run_replans_the_cosine_over_the_new_total():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.03)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100, eta_min=3e-5)
    for _ in range(100):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-5)  # the finished run ends at the minimum
    lr = replan_cosine(sched, 400)
    planned = [3e-5 + (0.03 - 3e-5) * (1 + math.cos(math.pi * t / 400)) / 2 for t in range(401)]
    assert lr == pytest.approx(planned[100])
    for t in range(101, 401):
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(planned[t], rel=1e-6, abs=1e-9)  # never back up to 0.03
    assert replan_cosine(sched, 400) is None  # a run resumed with its own total keeps its schedule


@pytest.mark.slow
def test_resume_after_kill_gives_the_maps_of_an_uninterrupted_run(tmp_path):
    args = ["recipe=tiny", "trainer.max_steps=60", "callbacks.checkpoint.every_n_train_steps=10", *QUIET]
    whole = run_cli("lineas.train", *args, f"output_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineas.train", *args, f"output_dir={out}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = read_checkpoint(ckpt)["global_step"]
    assert 0 < step < 60 and not (out / "maps").exists()  # killed mid-run
    resumed = run_cli("lineas.train", *args, f"output_dir={out}", f"resume={ckpt}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = lineas.load_maps(tmp_path / "whole" / "maps"), lineas.load_maps(out / "maps")
    a.requires_grad_(False), b.requires_grad_(False)
    diff = max(float((x - y).abs().max()) for x, y in zip([*a.omega, *a.beta], [*b.omega, *b.beta]))
    print(f"killed at checkpoint step {step} of 60; resumed maps vs uninterrupted: max |diff| {diff}")
    assert diff <= 1e-6, f"resumed from step {step}: max |diff| {diff}"
    assert b.info["steps"] == 60


def test_resume_that_would_not_train_is_refused_and_keeps_the_maps(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    before = (tiny_run / "maps" / "maps.safetensors").read_bytes()
    with pytest.raises(lineas.ConfigError, match="checkpoint is at step 20.*would not train.*above 20"):
        train(compose_cfg("recipe=tiny", f"output_dir={tiny_run}", f"resume={ckpt}", "trainer.max_steps=15", *QUIET))
    assert (tiny_run / "maps" / "maps.safetensors").read_bytes() == before
    assert read_checkpoint(ckpt)["global_step"] == 20  # last.ckpt is the final step, not the step-10 one


def test_resume_check_uses_the_global_batch(tiny_llama):
    from types import SimpleNamespace

    from lineas.datamodules import PromptPairDataModule

    module = lineas.LinEASModule(tiny_llama, sites="mlp_out")
    dm = PromptPairDataModule([f"s {i}" for i in range(8)], [f"t {i}" for i in range(8)], batch_size=4)
    module._trainer = SimpleNamespace(world_size=2, datamodule=dm)  # a DDP rank: 4 prompts of 8 per step
    assert module.fit_record()["batch_size"] == 8
    module._trainer = SimpleNamespace(world_size=1, datamodule=dm)
    assert module.fit_record()["batch_size"] == 4
