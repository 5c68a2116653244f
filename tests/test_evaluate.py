"""The evaluate CLI end to end on the tiny recipe, and its numbers against direct computations."""

from __future__ import annotations

import json

import torch

import lineas
from lineas.tasks.evaluate import evaluate
from lineas.metrics import Toxicity
from lineas.metrics.perplexity import perplexity
from lineas.cli.train import train
from tests.helpers import compose_cfg, run_cli


def test_evaluate_cli_writes_metrics_plot_and_tensorboard(tmp_path):
    train(compose_cfg("recipe=tiny", f"output_dir={tmp_path}", "trainer.max_steps=5",
                      "trainer.enable_progress_bar=false"))
    proc = run_cli("lineas.evaluate", f"maps={tmp_path / 'maps'}", "strengths=[0,1]", "num_prompts=6",
                   "num_perplexity_texts=5", "sampling.max_new_tokens=6", "progress=false", "threads=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "eval"
    record = json.loads((out / "metrics.json").read_text())
    assert [m["strength"] for m in record["metrics"]] == [0, 1]
    assert record["prompts"] == 6 and record["perplexity_texts"] == 5
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tb").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    assert "strength" in proc.stdout and "perplexity" in proc.stdout


def test_evaluate_numbers_are_the_metrics_of_the_generated_text(tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    maps = lineas.AffineMaps(lineas.resolve_sites(model, "mlp_out"), [64] * 4)
    with torch.no_grad():
        maps.beta[1].add_(0.5)
    prompts, neutral = ["You are such a", "The referee was a"], ["The river is long.", "Cats sleep a lot."]
    gen = lineas.Sampling(max_new_tokens=5, do_sample=False, batch_size=2)
    metrics, rows = evaluate(model, tok, maps, [0.0, 1.0], prompts, neutral, gen, progress=False)
    for m in metrics:
        texts = [r["continuation"] for r in rows if r["strength"] == m["strength"]]
        tox = Toxicity()
        tox.update(texts)
        assert m["toxicity_mean"] == float(tox.compute()["mean"])
        with maps.apply(model, strength=m["strength"]):
            assert m["perplexity"] == perplexity(model, tok, neutral, progress=False)
    assert metrics[0]["perplexity"] == perplexity(model, tok, neutral, progress=False)  # strength 0 = base
    assert metrics[0]["perplexity"] != metrics[1]["perplexity"]


def test_compare_cli_evaluates_every_maps_folder_like_evaluate(tmp_path):
    lineas_run, lact_run = tmp_path / "lineas", tmp_path / "lact"
    train(compose_cfg("recipe=tiny", f"output_dir={lineas_run}", "trainer.max_steps=5",
                      "trainer.enable_progress_bar=false"))
    train(compose_cfg("recipe=tiny", "estimator=linear_act", f"output_dir={lact_run}",
                      "trainer.enable_progress_bar=false"))
    out = tmp_path / "cmp"
    proc = run_cli("lineas.compare", f"maps=[{lineas_run / 'maps'},{lact_run / 'maps'}]", "strengths=[0.5,1]",
                   f"output_dir={out}", "num_prompts=4", "num_perplexity_texts=4", "sampling.max_new_tokens=5",
                   "progress=false", "threads=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "compare.json").read_text())
    rows = record["rows"]
    assert [(r["method"], r["strength"]) for r in rows] == [
        ("base model", 0.0), ("LinEAS, support 100.0%", 0.5), ("LinEAS, support 100.0%", 1.0),
        ("Linear-AcT, clipped", 0.5), ("Linear-AcT, clipped", 1.0)]
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Linear-AcT, clipped | 256 (100.0%) | 0.5 |" in (out / "compare.md").read_text()
    # The same numbers as evaluating each maps folder directly.
    backbone = lineas.CausalLM("tiny:llama")
    from lineas.datamodules import read_prompts
    from lineas.core.files import data_path

    prompts = read_prompts(data_path("toxicity/prompts.txt"))[:4]
    neutral = read_prompts(data_path("neutral/wiki.txt"))[:4]
    gen = record["generation"]
    direct, _ = evaluate(backbone.model, backbone.tokenizer, lineas.load_maps(lact_run / "maps"), [0.0, 1.0],
                         prompts, neutral, lineas.Sampling(**gen), progress=False)
    for key in ("toxicity_mean", "perplexity", "perplexity_se", "toxicity_mean_se"):
        assert rows[0][key] == direct[0][key] and rows[4][key] == direct[1][key]
    assert rows[4]["perplexity"] != rows[0]["perplexity"]
