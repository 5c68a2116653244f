"""The compare task (CLI): every maps folder evaluated as the evaluate task does, in one table."""

from __future__ import annotations

import json

import pytest
import torch

import lineas
from lineas.cli.train import train
from lineas.core.files import data_path
from lineas.core.prompts import read_prompts
from lineas.tasks.compare import default_labels
from lineas.tasks.evaluate import evaluate
from tests.helpers import compose_cfg, run_cli


@pytest.mark.slow  # spawns a process
def test_compare_cli_evaluates_every_maps_folder_like_evaluate(tmp_path):
    lineas_run, lact_run = tmp_path / "lineas", tmp_path / "lact"
    train(
        compose_cfg(
            "recipe=tiny", f"output_dir={lineas_run}", "trainer.max_steps=5", "trainer.enable_progress_bar=false"
        )
    )
    train(
        compose_cfg(
            "recipe=tiny", "estimator=linear_act", f"output_dir={lact_run}", "trainer.enable_progress_bar=false"
        )
    )
    out = tmp_path / "cmp"
    proc = run_cli(
        "lineas.compare",
        f"maps=[{lineas_run / 'maps'},{lact_run / 'maps'}]",
        "strengths=[0.5,1]",
        f"output_dir={out}",
        "num_prompts=4",
        "num_perplexity_texts=4",
        "sampling.max_new_tokens=5",
        "progress=false",
        "threads=1",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "compare.json").read_text())
    rows = record["rows"]
    assert [(r["method"], r["strength"]) for r in rows] == [
        ("base model", 0.0),
        ("LinEAS, support 100.0%", 0.5),
        ("LinEAS, support 100.0%", 1.0),
        ("Linear-AcT, clipped", 0.5),
        ("Linear-AcT, clipped", 1.0),
    ]
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Linear-AcT, clipped | 256 (100.0%) | 0.5 |" in (out / "compare.md").read_text()
    # The same numbers as evaluating each maps folder directly.
    backbone = lineas.CausalLM("tiny:llama")
    prompts = read_prompts(data_path("toxicity/prompts.txt"))[:4]
    neutral = read_prompts(data_path("neutral/wiki.txt"))[:4]
    gen = record["generation"]
    direct, _ = evaluate(
        backbone.model,
        backbone.tokenizer,
        lineas.load_maps(lact_run / "maps"),
        [0.0, 1.0],
        prompts,
        neutral,
        lineas.Sampling(**gen),
        progress=False,
    )
    for key in ("toxicity_mean", "perplexity", "perplexity_se", "toxicity_mean_se"):
        assert rows[0][key] == direct[0][key] and rows[4][key] == direct[1][key]
    assert rows[4]["perplexity"] != rows[0]["perplexity"]


def test_default_labels_tell_two_alike_fits_apart_by_their_run_folder():
    a, b = (lineas.AffineMaps(["m.x"], [4], info={"estimator": "lineas"}) for _ in range(2))
    lact = lineas.AffineMaps(["m.x"], [4], info={"estimator": "linear_act"})
    with torch.no_grad():
        a.omega[0][0] = b.omega[0][0] = 2.0  # the same support: describe() gives both one label
    labels = default_labels([a, b, lact], ["runs/first/maps", "runs/second/maps", "runs/lact/maps"])
    assert labels == ["LinEAS, support 25.0% (first)", "LinEAS, support 25.0% (second)", "Linear-AcT, unclipped"]
    assert len(set(default_labels([a, a], ["x/maps", "x/maps"]))) == 2  # the same folder twice
