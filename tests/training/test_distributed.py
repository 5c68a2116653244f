"""2-process DDP on CPU fits the same maps as one process on the same global batch (slow: subprocesses)."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

import lineas
from lineas.cli.train import train
from tests.helpers import compose_cfg, run_cli

pytestmark = pytest.mark.slow
TWO_RANKS = ("trainer.accelerator=cpu", "trainer.devices=2")


def fit(out, *extra: str) -> tuple[lineas.AffineMaps, dict[str, torch.Tensor], str]:
    """The maps after 3 steps, the gradients of the first step and the run's stdout (a CLI process: DDP and FSDP
    relaunch it); with one process and no stdout needed, :func:`fit_here` saves the process's start."""
    proc = run_cli("lineas.train", *_args(out, extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return *_fitted(out), proc.stdout


def fit_here(out, *extra: str) -> tuple[lineas.AffineMaps, dict[str, torch.Tensor], str]:
    """:func:`fit` in this process (one process only; no stdout)."""
    train(compose_cfg(*_args(out, extra)))
    return *_fitted(out), ""


def _fitted(out) -> tuple[lineas.AffineMaps, dict[str, torch.Tensor]]:
    return lineas.load_maps(out / "maps"), safetensors.torch.load_file(out / "grads.safetensors")


def _args(out, extra: tuple[str, ...]) -> list[str]:
    grads = out / "grads.safetensors"
    return [
        "recipe=tiny",
        f"output_dir={out}",
        "trainer.enable_progress_bar=false",
        "trainer.max_steps=3",
        f'+callbacks.grads={{_target_:tests.helpers.SaveFirstGradients,path:"{grads}"}}',
        *extra,
    ]


def max_diff(a: lineas.AffineMaps, b: lineas.AffineMaps) -> float:
    pairs = zip([*a.omega, *a.beta], [*b.omega, *b.beta])
    return max((x - y).abs().max().item() for x, y in pairs)


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |a - b| over all gradients, relative to the largest |a|."""
    assert a.keys() == b.keys()
    scale = max(g.abs().max().item() for g in a.values())
    return max((a[k] - b[k]).abs().max().item() for k in a) / scale


# The maps are compared at lr 1e-3 (official default): Adam divides each gradient by its own running
# scale, so float32 summation-order noise on near-cancelling coordinates (1e-7 relative to the largest
# gradient) becomes noise of order lr in the update; at the tiny recipe's lr 3e-2 the maps differ by
# up to ~2e-5 after 3 steps. Adam is also blind to a uniform gradient factor (a spurious world size),
# so the first step's gradients are compared too, where such a factor would show as a 50% error.
LR = "module.lr=1e-3"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process taking all 32 fitting prompts per step; one run per pooling."""
    runs = {}

    def get(pooling: str = "mean") -> tuple[lineas.AffineMaps, dict[str, torch.Tensor], str]:
        if pooling not in runs:
            runs[pooling] = fit_here(
                tmp_path_factory.mktemp(f"one_{pooling}"), "data.batch_size=32", LR, f"module.pooling={pooling}"
            )
        return runs[pooling]

    return get


# `token` pooling gives each rank a different number of samples (its prompts' lengths differ).
@pytest.mark.parametrize("pooling", ["mean", "token"])
def test_ddp_equals_one_process_on_the_global_batch(tmp_path, one_process, pooling):
    # Two ranks take 16 of the 32 prompts each.
    single, single_grads, _ = one_process(pooling)
    ddp, ddp_grads, _ = fit(
        tmp_path / "two", "data.batch_size=16", LR, f"module.pooling={pooling}", *TWO_RANKS, "trainer.strategy=ddp"
    )
    moved = max((w - 1).abs().max().item() for w in single.omega)
    assert moved > 1e-3  # the maps really moved
    assert max_diff(single, ddp) <= 1e-5
    assert max_rel_diff(single_grads, ddp_grads) <= 1e-5
    # One output folder per run, written by rank 0.
    assert json.loads((tmp_path / "two" / "fit_summary.json").read_text())["steps"] == 3
    assert not list(tmp_path.glob("two/*/maps"))


def test_half_batch_without_gather_would_differ(tmp_path, one_process):
    # The checks above are not vacuous: one process on 16 of the 32 prompts gives other gradients.
    _, half_grads, _ = fit_here(tmp_path / "half", "data.batch_size=16", LR)
    assert max_rel_diff(one_process()[1], half_grads) > 1e-2


def test_fsdp2_shards_the_base_and_fits_the_same_maps(tmp_path, one_process):
    single, single_grads, _ = one_process()
    fsdp, fsdp_grads, stdout = fit(
        tmp_path / "two",
        "data.batch_size=16",
        LR,
        *TWO_RANKS,
        "trainer.strategy={_target_:lightning.pytorch.strategies.ModelParallelStrategy}",
        "trainer.enable_model_summary=true",
    )
    assert "FSDPLlamaForCausalLM" in stdout  # the model summary names the fully_shard-ed base
    assert max_diff(single, fsdp) <= 1e-5
    assert max_rel_diff(single_grads, fsdp_grads) <= 1e-5
