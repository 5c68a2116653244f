"""2-process DDP on CPU fits the same maps as one process on the same global batch (slow: subprocesses)."""

from __future__ import annotations

import json

import pytest
import torch

import lineas
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


def fit(out, *extra: str) -> lineas.AffineMaps:
    proc = run_cli("lineas.train", "recipe=tiny", f"output_dir={out}", "trainer.enable_progress_bar=false",
                   "trainer.max_steps=3", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return lineas.load_maps(out / "maps")


def max_diff(a: lineas.AffineMaps, b: lineas.AffineMaps) -> float:
    pairs = zip([*a.omega, *a.beta], [*b.omega, *b.beta])
    return max((x - y).abs().max().item() for x, y in pairs)


# `token` pooling gives each rank a different number of samples (its prompts' lengths differ).
@pytest.mark.parametrize("pooling", ["mean", "token"])
def test_ddp_equals_one_process_on_the_global_batch(tmp_path, pooling):
    # 32 fitting prompts: one process takes all 32 per step, two ranks 16 each.
    single = fit(tmp_path / "one", "data.batch_size=32", f"module.pooling={pooling}")
    ddp = fit(tmp_path / "two", "data.batch_size=16", f"module.pooling={pooling}", "trainer.accelerator=cpu",
              "trainer.devices=2", "trainer.strategy=ddp")
    moved = max((w - 1).abs().max().item() for w in single.omega)
    assert moved > 1e-2  # the maps really moved
    assert max_diff(single, ddp) <= 1e-5
    # One output folder per run, written by rank 0.
    assert json.loads((tmp_path / "two" / "fit_summary.json").read_text())["steps"] == 3
    assert not list(tmp_path.glob("two/*/maps"))


def test_half_batch_without_gather_would_differ(tmp_path):
    # The check above is not vacuous: one process on 16 of the 32 prompts gives other maps.
    single = fit(tmp_path / "one", "data.batch_size=32")
    half = fit(tmp_path / "half", "data.batch_size=16")
    assert max_diff(single, half) > 1e-3
    assert torch.isfinite(half.omega[0]).all()


def test_fsdp2_shards_the_base_and_fits_the_same_maps(tmp_path):
    single = fit(tmp_path / "one", "data.batch_size=32")
    proc = run_cli("lineas.train", "recipe=tiny", f"output_dir={tmp_path / 'two'}", "trainer.enable_progress_bar=false",
                   "trainer.max_steps=3", "data.batch_size=16", "trainer.accelerator=cpu", "trainer.devices=2",
                   "trainer.strategy={_target_:lightning.pytorch.strategies.ModelParallelStrategy}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FSDPLlamaForCausalLM" in proc.stdout  # the model summary names the fully_shard-ed base
    assert max_diff(single, lineas.load_maps(tmp_path / "two" / "maps")) <= 1e-5
