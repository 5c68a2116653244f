"""``python -m lineas.NAME``: a user error is one line on stderr naming what to fix, exit status 2."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli

CASES = {
    "train": (["recipe=tiny", "data.source=no_such_prompts.txt"], "prompt file no_such_prompts.txt does not exist"),
    "export": (["maps=no_such_maps", "output_dir=OUT"], "no_such_maps: no lineas.json"),
    "generate": (["model=tiny:llama", "prompts=no_such_prompts.txt"], "prompt file no_such_prompts.txt does not exist"),
    "evaluate": (["maps=no_such_maps"], "no_such_maps: no lineas.json"),
    "compare": (["maps=[no_such_maps]", "output_dir=OUT"], "no_such_maps: no lineas.json"),
    "compose": (["maps=[no_such_maps]", "output_dir=OUT"], "no_such_maps: no lineas.json"),
}


QUICK = {"train", "export"}  # the others are the same runner (lineas.cli.main.hydra_entry) as export


@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CASES)])
def test_user_error_is_one_line_and_exit_2(name, tmp_path):
    args, message = CASES[name]
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    if name == "train":
        args.append(f"output_dir={tmp_path / 'run'}")
    proc = run_cli(f"lineas.{name}", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lineas.")]
    assert len(lines) == 1 and lines[0].startswith(f"lineas.{name}: ") and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_key_of_the_wrong_type_names_the_key(tmp_path):
    proc = run_cli("lineas.train", "recipe=tiny", "trainer.max_steps=abc", f"output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "lineas.train: trainer.max_steps='abc': give a whole number of optimizer steps" in proc.stderr
