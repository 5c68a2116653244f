"""Bad input gets one clear error, and nothing half-written is left behind."""

from __future__ import annotations

import pytest
import torch

import lineas
from lineas.datamodules import PromptFileError, PromptPairDataModule, read_prompts
from lineas.cli.train import train
from tests.helpers import compose_cfg, run_cli


def test_missing_prompt_file(tmp_path):
    with pytest.raises(PromptFileError, match="nope.txt does not exist"):
        read_prompts(tmp_path / "nope.txt")


@pytest.mark.parametrize("name,text,match", [
    ("empty.txt", "\n  \n", "holds no prompts"),
    ("rows.jsonl", '{"prompt": "a"}\n', "no field 'text'"),
    ("bad.jsonl", '{"text": "a"}\nnot json\n', r"bad.jsonl:2: not valid JSON"),
    ("table.csv", "sentence\nhello\n", "no column 'text'"),
    ("data.parquet", "x", "unknown prompt file type"),
])
def test_bad_prompt_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PromptFileError, match=match):
        read_prompts(path)


def test_too_few_prompts(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("only one prompt\n")
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"prompt {i}" for i in range(8)))
    with pytest.raises(PromptFileError, match=r"source prompts .*one.txt.*at least 2"):
        PromptPairDataModule(one, many, heldout_fraction=0.0)
    with pytest.raises(PromptFileError, match="at least 2"):
        PromptPairDataModule(many, many, num_fit=7)  # 1 held out cannot be scored


def test_cli_pattern_matching_nothing(tmp_path):
    proc = run_cli("lineas.train", "recipe=tiny", f"output_dir={tmp_path}", "module.sites=[model.decoder.nope]")
    assert proc.returncode != 0
    err = proc.stderr
    assert "model.decoder.nope" in err and "matches no module" in err and "model.layers.0" in err
    assert not (tmp_path / "maps").exists()


def test_cli_missing_prompt_file_names_it(tmp_path):
    proc = run_cli("lineas.train", "recipe=tiny", f"output_dir={tmp_path}", "data.source=missing_toxic.txt")
    assert proc.returncode != 0
    assert "missing_toxic.txt does not exist" in proc.stderr


def test_non_finite_loss_names_the_site_and_writes_nothing(tmp_path, monkeypatch):
    real_init = lineas.LinEASModule.__init__

    def init_with_poisoned_map(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        with torch.no_grad():
            self.maps.beta[2][5] = float("nan")  # site 2 and everything downstream go non-finite

    monkeypatch.setattr(lineas.LinEASModule, "__init__", init_with_poisoned_map)
    out = tmp_path / "run"
    with pytest.raises(lineas.FitError, match=r"model\.layers\.2\.mlp\.down_proj") as err:
        train(compose_cfg("recipe=tiny", f"output_dir={out}", "trainer.enable_progress_bar=false"))
    assert "model.layers.1.mlp.down_proj" not in str(err.value)
    assert not (out / "maps").exists() and not (out / "fit_summary.json").exists()
