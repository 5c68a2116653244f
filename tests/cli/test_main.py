"""``python -m lineas.NAME``: a user error is one line on stderr naming what to fix, exit status 2."""

from __future__ import annotations

import errno

import pytest

from lineas.cli.main import user_error
from tests.helpers import run_cli

CASES = {  # id: (entry point, arguments, what the one line says)
    "train": ("train", ["recipe=tiny", "data.source=no_such_prompts.txt"], "prompt file no_such_prompts.txt does not"),
    "export": ("export", ["maps=no_such_maps", "output_dir=OUT"], "no_such_maps: no lineas.json"),
    "generate": ("generate", ["model=tiny:llama", "prompts=no_such_prompts.txt"], "prompt file no_such_prompts.txt"),
    "evaluate": ("evaluate", ["maps=no_such_maps"], "no_such_maps: no lineas.json"),
    "compare": ("compare", ["maps=[no_such_maps]", "output_dir=OUT"], "no_such_maps: no lineas.json"),
    "compose": ("compose", ["maps=[no_such_maps]", "output_dir=OUT"], "no_such_maps: no lineas.json"),
    "gate": ("gate", ["maps=no_such_maps", "output_dir=OUT"], "no_such_maps: no lineas.json"),
    "train-lr": ("train", ["recipe=tiny", "module.lr=-0.01"], "module.lr=-0.01: give a positive learning rate"),
    "train-lr-nan": ("train", ["recipe=tiny", "module.lr=nan"], "module.lr=nan"),
    "train-batch": ("train", ["recipe=tiny", "data.batch_size=0"], "data.batch_size=0"),
    "train-steps": ("train", ["recipe=tiny", "trainer.max_steps=-1"], "trainer.max_steps=-1 (no step limit) needs"),
    "train-num-fit": ("train", ["recipe=tiny", "data.num_fit=-5"], "data.num_fit=-5"),
    "train-overwrite": ("train", ["recipe=tiny", "output_dir=FOREIGN", "overwrite=true"], "not written by lineas"),
    "generate-temperature": (
        "generate",
        ["model=tiny:llama", "prompts=p.txt", "sampling.temperature=0"],
        "temperature",
    ),
    "generate-tokens": ("generate", ["model=tiny:llama", "prompts=p.txt", "sampling.max_new_tokens=-1"], "max_new"),
    "evaluate-prompts": ("evaluate", ["model=tiny:llama", "num_prompts=0", "output_dir=OUT"], "num_prompts=0"),
    "export-file": ("export", ["maps=no_such_maps", "output_dir=FILE"], "is a file, not a folder"),
}


QUICK = {"export"}  # the others are the same runner (lineas.cli.main.hydra_entry) as export


@pytest.mark.parametrize("case", [c if c in QUICK else pytest.param(c, marks=pytest.mark.slow) for c in sorted(CASES)])
def test_user_error_is_one_line_and_exit_2(case, tmp_path):
    name, args, message = CASES[case]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("x")
    (tmp_path / "file").write_text("keep")
    subs = {"OUT": tmp_path / "out", "FOREIGN": tmp_path / "foreign", "FILE": tmp_path / "file"}
    args = [next((a.replace(k, str(v)) for k, v in subs.items() if a.endswith("=" + k)), a) for a in args]
    if name == "train" and not any(a.startswith("output_dir=") for a in args):
        args.append(f"output_dir={tmp_path / 'run'}")
    proc = run_cli(f"lineas.{name}", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lineas.")]
    assert len(lines) == 1 and lines[0].startswith(f"lineas.{name}: ") and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "foreign" / "thesis.tex").read_text() == "x" and (tmp_path / "file").read_text() == "keep"


@pytest.mark.slow  # spawns a process
def test_a_key_of_the_wrong_type_names_the_key(tmp_path):
    proc = run_cli("lineas.train", "recipe=tiny", "trainer.max_steps=abc", f"output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "lineas.train: trainer.max_steps='abc': give a whole number of optimizer steps" in proc.stderr


def test_a_full_disk_is_a_user_error_naming_the_file():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/run/maps/maps.safetensors")
    assert "no space left on the device writing /data/run/maps/maps.safetensors" in str(user_error(full))
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError("3145728 requested and 81120 written")  # torch.save's words for it
    assert "no space left on the device" in str(user_error(wrapped))
    assert user_error(RuntimeError("a bug")) is None
