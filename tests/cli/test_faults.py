"""Kill -9 at random points of a fit and of an export: every output is complete or absent, and a resume completes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

import lineas
from lineas.training.resume import read_checkpoint
from tests.helpers import ROOT, run_cli

ARGS = [
    "recipe=tiny",
    "trainer.max_steps=80",
    "callbacks.checkpoint.every_n_train_steps=10",
    "trainer.enable_progress_bar=false",
]


def export_into(out) -> str:
    return f"callbacks.export_merged={{_target_: lineas.callbacks.ExportMerged, dirpath: '{out / 'merged'}'}}"


def killed(args: list[str], after: float) -> None:
    """``python -m args...`` killed with SIGKILL ``after`` seconds (or left to finish, if sooner)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        proc.wait(timeout=after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def assert_complete_or_absent(out) -> None:
    if (out / "maps").exists():
        lineas.load_maps(out / "maps")
    if (out / "merged").exists():
        assert json.loads((out / "merged" / "lineas_merge.json").read_text())["strength"] == 1.0
        assert load_file(out / "merged" / "model.safetensors")
    if (out / "fit_summary.json").exists():
        json.loads((out / "fit_summary.json").read_text())
    if (out / "checkpoints" / "last.ckpt").exists():
        read_checkpoint(out / "checkpoints" / "last.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_during_fit_and_export(tmp_path, seed):
    rng = random.Random(seed)
    out = tmp_path / "run"
    killed(["lineas.train", *ARGS, export_into(out), f"output_dir={out}"], after=rng.uniform(4.0, 14.0))
    assert_complete_or_absent(out)
    ckpt = out / "checkpoints" / "last.ckpt"
    # killed mid-fit: resume; killed before the first checkpoint or after the last step (during the exports,
    # where resuming is refused as it would not train): start again
    mid_fit = ckpt.exists() and read_checkpoint(ckpt)["global_step"] < 80
    again = [f"resume={ckpt}"] if mid_fit else ["overwrite=true"]
    done = run_cli("lineas.train", *ARGS, export_into(out), f"output_dir={out}", *again)
    assert done.returncode == 0, done.stderr[-2000:]
    assert lineas.load_maps(out / "maps").info["steps"] == 80
    assert_complete_or_absent(out)
    export = tmp_path / "exported"
    killed(["lineas.export", f"maps={out / 'maps'}", f"output_dir={export}"], after=rng.uniform(3.0, 9.0))
    if export.exists():
        assert load_file(export / "model.safetensors") and (export / "lineas_merge.json").is_file()
