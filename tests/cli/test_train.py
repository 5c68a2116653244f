"""The training entry point end to end on the tiny recipe: summary, maps file, CLI, resume, user errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import lineas
from lineas.cli.train import claim_output_dir, train
from lineas.core.outputs import MARKER, mark
from lineas.training.resume import read_checkpoint
from tests.helpers import ROOT, compose_cfg, run_cli, run_cli_cases


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    cfg = compose_cfg("recipe=tiny", f"output_dir={out}", "trainer.enable_progress_bar=false")
    train(cfg)
    return out


def test_tiny_fit_lowers_heldout_w2_at_every_site(tiny_run):
    summary = json.loads((tiny_run / "fit_summary.json").read_text())
    sites = summary["heldout_w2"]["sites"]
    assert len(sites) == 4
    for name, w2 in sites.items():
        assert w2["after"] < 0.8 * w2["before"], name
    assert summary["steps"] == 60
    assert summary["heldout_prompts"] == {"source": 40, "target": 40}


def test_maps_file_records_the_run(tiny_run):
    meta = json.loads((tiny_run / "maps" / "lineas.json").read_text())
    assert meta["base_model"] == "tiny:llama"
    assert meta["pooling"] == "mean"
    assert meta["steps"] == 60
    assert [s["site"] for s in meta["sites"]] == [f"model.layers.{i}.mlp.down_proj" for i in range(4)]
    assert all(s["dim"] == 64 for s in meta["sites"])
    assert meta["optimizer"] == {
        "_target_": "torch.optim.adam.Adam",
        "betas": [0.9, 0.9],
        "weight_decay": 0.0,
        "lr": pytest.approx(0.03),
    }
    assert meta["scheduler"] == {"_target_": "lineas.training.optim.cosine", "min_lr_ratio": 1e-3}
    assert set(meta["versions"]) >= {"lineas", "torch", "transformers", "lightning"}
    maps = lineas.load_maps(tiny_run / "maps")
    tensors = load_file(tiny_run / "maps" / "maps.safetensors")
    assert meta["support"]["total"] == maps.support()["total"]
    assert torch.equal(maps.omega[2], tensors["model.layers.2.mlp.down_proj.omega"])
    assert not torch.equal(maps.omega[2], torch.ones(64))


def test_checkpoint_holds_maps_not_base_and_resumes(tmp_path):
    out = tmp_path / "run"
    base = [
        "recipe=tiny",
        f"output_dir={out}",
        "trainer.enable_progress_bar=false",
        "callbacks.checkpoint.every_n_train_steps=5",
    ]
    train(compose_cfg(*base, "trainer.max_steps=10"))
    ckpt = out / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert state["global_step"] == 10
    assert set(state["state_dict"]) == {f"maps.{k}.{i}" for k in ("omega", "beta") for i in range(4)}
    assert ckpt.stat().st_size < 200_000  # the 3.3M-parameter base is not in it

    train(compose_cfg(*base, "trainer.max_steps=20", f"resume={ckpt}"))
    assert json.loads((out / "maps" / "lineas.json").read_text())["steps"] == 20
    resumed = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert resumed["global_step"] == 20
    assert not torch.equal(resumed["state_dict"]["maps.omega.0"], state["state_dict"]["maps.omega.0"])


USER_RECIPE = """\
# @package _global_
backbone:
  model: tiny:llama
data:
  source: ${lineas_data:toxicity/toxic.txt}
  target: ${lineas_data:tiny/polite.txt}
  num_fit: 32
module:
  sites: attn_in
  lr: 0.03
trainer:
  max_steps: 5
  accelerator: cpu
"""


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """The short commands of this file, run one after the other in ONE process (``run_cli_cases``): the folder
    they ran in, per command its exit status, stdout and stderr, and the fake run's files before they ran."""
    tmp = tmp_path_factory.mktemp("commands")
    (tmp / "my_recipe.yaml").write_text(USER_RECIPE)
    (tmp / "broken.yaml").write_text("module: {sites: [a, b}\n")
    run = fake_run(tmp / "fake" / "run")
    before = snapshot(run)
    cases = {
        "recipe": [f"recipe={tmp / 'my_recipe.yaml'}", f"output_dir={tmp / 'out'}"],
        "multirun": ["-m", "recipe=tiny", f"output_dir={tmp / 'multi'}", "trainer.devices=2", "trainer.strategy=ddp"],
        "broken": [f"recipe={tmp / 'broken.yaml'}", f"output_dir={tmp / 'broken_out'}"],
        "cfg": ["recipe=tiny", f"output_dir={run}", "overwrite=true", "--cfg", "job"],
        "typo": ["recipe=tiny", f"output_dir={run}", "overwrite=true", "module.lrr=1"],
        "help": ["--help"],
    }
    results = run_cli_cases([("lineas.train", args) for args in cases.values()])
    return SimpleNamespace(folder=tmp, ran=dict(zip(cases, results)), fake_before=before)


@pytest.mark.slow  # spawns a process (the commands fixture)
def test_cli_with_a_user_recipe_file(commands):
    code, _, stderr = commands.ran["recipe"]
    assert code == 0, stderr[-2000:]
    out = commands.folder / "out"
    meta = json.loads((out / "maps" / "lineas.json").read_text())
    assert [s["site"] for s in meta["sites"]] == [f"model.layers.{i}.input_layernorm" for i in range(4)]
    assert (out / ".hydra" / "config.yaml").is_file()
    assert list((out / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow  # spawns a process (the commands fixture)
def test_cli_refuses_multirun_with_ddp(commands):
    code, stdout, stderr = commands.ran["multirun"]
    assert code != 0
    assert "multirun" in (stdout + stderr).lower()
    assert not (commands.folder / "multi" / "0" / "maps").exists()


@pytest.mark.slow  # spawns a process (the commands fixture)
def test_cli_bad_recipe_file(commands):
    code, _, stderr = commands.ran["broken"]
    assert code != 0
    assert f"recipe file {commands.folder / 'broken.yaml'} is not valid YAML" in stderr
    assert not (commands.folder / "broken_out").exists()


def test_a_pattern_matching_nothing_is_named_with_examples(tmp_path):
    # (that the CLI prints such errors as one line, exit 2, is tests/cli/test_main.py's)
    with pytest.raises(lineas.SiteError) as err:
        train(compose_cfg("recipe=tiny", f"output_dir={tmp_path}", "module.sites=[model.decoder.nope]"))
    assert "model.decoder.nope" in str(err.value) and "matches no module" in str(err.value)
    assert "model.layers.0" in str(err.value)
    assert not (tmp_path / "maps").exists()


def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def claim(*args):
    with claim_output_dir(list(args)):
        pass


def fake_run(path, checkpoint=True):
    """A finished lineas run's folder (what the claim looks at), without fitting one."""
    (path / "maps").mkdir(parents=True)
    (path / "maps" / "lineas.json").write_text("{}")
    if checkpoint:
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    mark(path, "run")
    return path


def test_claim_output_dir(tmp_path):
    run = tmp_path / "run"
    claim(f"output_dir={run}")  # absent: fine
    claim(f"output_dir={run}")  # holding only its marker: fine
    fake_run(run)
    with pytest.raises(lineas.LineasError, match=r"holds files already \(checkpoints, maps\).*resume=.*overwrite=true"):
        claim(f"output_dir={run}")
    claim(f"output_dir={run}", f"resume={run}/checkpoints/last.ckpt")  # continuing its own checkpoint: fine
    assert (run / "maps").exists()
    with pytest.raises(lineas.LineasError, match="overlaps .*last.ckpt"):  # would delete what it resumes
        claim(f"output_dir={run}", f"resume={run}/checkpoints/last.ckpt", "overwrite=true")
    claim(f"output_dir={run}", "overwrite=true")
    assert sorted(p.name for p in run.iterdir()) == [MARKER]  # replaced (the run here wrote nothing)


def test_overwrite_never_deletes_what_lineas_did_not_write(tmp_path, monkeypatch):
    thesis = tmp_path / "A"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("x")
    with pytest.raises(lineas.LineasError, match="not written by lineas"):
        claim(f"output_dir={thesis}", "overwrite=true", "module.lrr=1")
    assert (thesis / "thesis.tex").read_text() == "x"
    repo = fake_run(tmp_path / "repo")
    (repo / ".git").mkdir()
    monkeypatch.chdir(repo)
    with pytest.raises(lineas.LineasError, match="current folder"):
        claim("output_dir=.", "overwrite=true")
    assert (repo / ".git").is_dir() and (repo / "maps" / "lineas.json").is_file()


def test_resume_of_one_run_into_another_is_refused(tmp_path):
    a, b = fake_run(tmp_path / "A"), fake_run(tmp_path / "B")
    before = snapshot(b)
    with pytest.raises(lineas.LineasError, match=f"output_dir={b} holds files already"):
        claim(f"output_dir={b}", f"resume={a}/checkpoints/last.ckpt")
    assert snapshot(b) == before
    claim(f"output_dir={tmp_path / 'C'}", f"resume={a}/checkpoints/last.ckpt")  # into a new folder: fine


def test_a_failed_start_does_not_block_the_retry_and_hints_only_real_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("error")
    claim(f"output_dir={run}")  # Hydra's start-up files of a run that failed: not a run to protect
    fake_run(run, checkpoint=False)
    with pytest.raises(lineas.LineasError) as err:
        claim(f"output_dir={run}")
    assert "resume=" not in str(err.value)  # there is no checkpoint to suggest
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        fake_run(sweep / job)
    with pytest.raises(lineas.LineasError, match=f"resume={sweep / '0' / 'checkpoints' / 'last.ckpt'}"):
        claim(f"output_dir={sweep}")


def test_fit_api_keeps_the_folder_when_the_call_is_wrong(tmp_path):
    keep = fake_run(tmp_path / "keep")
    before = snapshot(keep)
    with pytest.raises(lineas.PromptFileError, match="no_such_file.txt"):
        lineas.fit("tiny:llama", "no_such_file.txt", ["a b", "c d"], output_dir=keep, overwrite=True, steps=2)
    with pytest.raises(lineas.ConfigError, match="steps=10.5"):
        lineas.fit("tiny:llama", ["a"], ["b"], steps=10.5, output_dir=keep, overwrite=True)
    with pytest.raises(lineas.ConfigError, match="model=None"):
        lineas.fit(None, ["a"], ["b"], output_dir=keep, overwrite=True)
    assert snapshot(keep) == before


def test_last_checkpoint_holds_the_final_step(tiny_run):
    assert torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 60


@pytest.mark.slow  # two CLI runs
def test_second_run_into_the_same_folder_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    first = run_cli(
        "lineas.train", "recipe=tiny", "trainer.max_steps=3", f"output_dir={out}", "trainer.enable_progress_bar=false"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(out)
    assert "maps/maps.safetensors" in before and "checkpoints/last.ckpt" in before
    second = run_cli("lineas.train", "recipe=tiny", "trainer.max_steps=5", f"output_dir={out}")
    assert second.returncode == 2, second.stderr[-2000:]
    assert [line for line in second.stderr.splitlines() if line.startswith("lineas.")] == [
        line for line in second.stderr.splitlines() if "holds files already" in line
    ]
    assert snapshot(out) == before  # .hydra/, logs, maps, checkpoints: untouched


@pytest.mark.slow  # spawns a process (the commands fixture)
def test_cfg_job_and_a_typo_with_overwrite_leave_the_run_as_it_was(commands):
    code, stdout, stderr = commands.ran["cfg"]
    assert code == 0 and "max_steps" in stdout, stderr[-2000:]
    code, _, stderr = commands.ran["typo"]
    assert code != 0 and "lrr" in stderr
    fake = commands.folder / "fake"
    assert snapshot(fake / "run") == commands.fake_before
    assert sorted(p.name for p in fake.iterdir()) == ["run"]


@pytest.mark.slow  # three CLI runs at once
def test_of_three_fits_started_at_once_into_one_folder_one_runs(tmp_path):
    out = tmp_path / "run"
    args = ["recipe=tiny", "trainer.max_steps=2", f"output_dir={out}", "trainer.enable_progress_bar=false"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "lineas.train", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    errors = [p.stderr.read().decode() for p in procs]
    assert sorted(codes) == [0, 2, 2], errors
    refused = [e for c, e in zip(codes, errors) if c == 2]
    assert all("being written by another lineas process" in e or "holds files already" in e for e in refused)
    assert lineas.load_maps(out / "maps").info["steps"] == 2


@pytest.mark.slow  # a CLI run stopped by a signal
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_says_how_to_resume_and_exits_non_zero(tmp_path, signum, code):
    out = tmp_path / "run"
    args = ["recipe=tiny", "trainer.max_steps=100000", f"output_dir={out}", "trainer.enable_progress_bar=false"]
    args.append("callbacks.checkpoint.every_n_train_steps=3")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineas.train", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 400
    while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:  # fitting, at step 3
        time.sleep(0.5)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("lineas.train:")]
    ckpt = out / "checkpoints" / "last.ckpt"
    assert len(lines) == 1 and f"resume={ckpt}" in lines[0], stderr[-2000:]
    step = read_checkpoint(ckpt)["global_step"]
    assert step >= 3 and f"after step {step}" in lines[0]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["recipe=tiny_sd", "backbone.model=tiny:llama"], "tiny:llama is not a diffusers pipeline"),
        (["recipe=tiny", "backbone.model=tiny:sd"], "tiny:sd is a diffusers pipeline, not a causal LM"),
        (["recipe=tiny", "backbone.model=./no/such/folder"], "no such folder"),
        (["recipe=tiny", "data.source=???"], "data.source and data.target are required"),
    ],
)
def test_a_backbone_or_data_that_cannot_be_used_is_one_error(tmp_path, args, match):
    with pytest.raises(lineas.LineasError, match=match):
        train(compose_cfg(*args, f"output_dir={tmp_path / 'run'}", "trainer.enable_progress_bar=false"))


@pytest.mark.slow  # spawns a process (the commands fixture)
def test_help_says_what_the_tool_does_with_examples_that_compose(commands):
    code, stdout, stderr = commands.ran["help"]
    assert code == 0, stderr[-2000:]
    assert stdout.startswith("python -m lineas.train: fit LinEAS steering maps")
    lines = [line for line in stdout.splitlines() if line.startswith("  python -m lineas.train")]
    examples = [line.split("#")[0].split()[3:] for line in lines]
    assert len(examples) >= 4 and "== Config ==" in stdout
    for overrides in examples:  # every example composes into a valid config
        compose_cfg(*overrides)
