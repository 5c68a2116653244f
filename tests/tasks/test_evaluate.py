"""The evaluate task end to end on the tiny recipe (CLI), and its numbers against direct computations."""

from __future__ import annotations

import json

import pytest
import torch

import lineas
from lineas.cli.evaluate import run_evaluate
from lineas.cli.train import train
from lineas.core.errors import ConfigError, OutputExistsError
from lineas.core.maps import AffineMaps
from lineas.core.outputs import MARKER
from lineas.metrics import Toxicity
from lineas.metrics.perplexity import fluency_with_se, perplexity_with_se
from lineas.tasks.configs import EvaluateConfig, Sampling
from lineas.tasks.evaluate import evaluate
from tests.helpers import compose_cfg, run_cli


@pytest.mark.slow  # spawns a process
def test_evaluate_cli_writes_metrics_plot_and_tensorboard(tmp_path):
    train(
        compose_cfg("recipe=tiny", f"output_dir={tmp_path}", "trainer.max_steps=5", "trainer.enable_progress_bar=false")
    )
    proc = run_cli(
        "lineas.evaluate",
        f"maps={tmp_path / 'maps'}",
        "strengths=[0,1]",
        "num_prompts=6",
        "num_perplexity_texts=5",
        "sampling.max_new_tokens=6",
        "progress=false",
        "threads=1",
    )
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
    assert (out / MARKER).is_file()
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(OutputExistsError, match=f"output_dir={out} holds files already.*overwrite=true"):
        run_evaluate(EvaluateConfig(maps=str(tmp_path / "maps")))  # the README's follow-up: refused, not replaced
    assert (out / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"num_prompts": 0}, "num_prompts=0"),
        ({"num_prompts": -118}, "num_prompts=-118"),
        ({"strengths": []}, r"strengths=\[\]"),
        ({"sampling": Sampling(top_p=2.0)}, "sampling.top_p=2.0"),
        ({"sampling": Sampling(temperature=0.0)}, "sampling.temperature=0.0"),
        ({"sampling": Sampling(max_new_tokens=-1)}, "sampling.max_new_tokens=-1"),
    ],
)
def test_nonsense_settings_are_refused_before_any_model_loads(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        run_evaluate(EvaluateConfig(model="no/such/model", output_dir=str(tmp_path / "e"), **change))
    assert not (tmp_path / "e").exists()


def test_evaluate_never_replaces_a_folder_lineas_did_not_write(tmp_path):
    AffineMaps(["model.layers.0.mlp"], [64], info={"base_model": "tiny:llama"}).save(tmp_path / "maps")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "notes.md").write_text("mine")
    with pytest.raises(OutputExistsError, match="not written by lineas"):
        run_evaluate(EvaluateConfig(maps=str(tmp_path / "maps"), overwrite=True))
    with pytest.raises(OutputExistsError, match="overlaps"):
        run_evaluate(EvaluateConfig(maps=str(tmp_path / "maps"), output_dir=str(tmp_path), overwrite=True))
    assert (tmp_path / "eval" / "notes.md").read_text() == "mine"


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
        # fluency: the continuations scored by the UNSTEERED model, given their prompts
        assert m["fluency"] == fluency_with_se(model, tok, prompts, texts, batch_size=2, progress=False)[0]
        with maps.apply(model, strength=m["strength"]):
            assert m["perplexity"] == perplexity_with_se(model, tok, neutral, progress=False)[0]
    assert metrics[0]["perplexity"] == perplexity_with_se(model, tok, neutral, progress=False)[0]  # strength 0 = base
    assert metrics[0]["perplexity"] != metrics[1]["perplexity"]
