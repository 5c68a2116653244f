"""``python -m lineas.NAME``: a user error is one line on stderr naming what to fix, exit status 2."""

from __future__ import annotations

import errno

import pytest

from lineas.cli.main import user_error
from tests.helpers import run_cli, run_cli_cases

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
    "train-type": ("train", ["recipe=tiny", "trainer.max_steps=abc"], "trainer.max_steps='abc': give a whole number"),
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


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Every case of CASES in its own folder, run in ONE process (``run_cli_cases``); ``export`` alone also in a
    process of its own, in the quick suite (``test_one_refusal_in_a_fresh_process``)."""
    folders = {case: _folder(tmp_path_factory.mktemp(case)) for case in CASES}
    results = run_cli_cases([(f"lineas.{CASES[c][0]}", _args(c, folders[c])) for c in CASES])
    return {case: (folders[case], code, err) for case, (code, _, err) in zip(CASES, results)}


def _folder(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("x")
    (tmp_path / "file").write_text("keep")
    return tmp_path


def _args(case, tmp_path):
    name, args, _ = CASES[case]
    subs = {"OUT": tmp_path / "out", "FOREIGN": tmp_path / "foreign", "FILE": tmp_path / "file"}
    args = [next((a.replace(k, str(v)) for k, v in subs.items() if a.endswith("=" + k)), a) for a in args]
    if name == "train" and not any(a.startswith("output_dir=") for a in args):
        args.append(f"output_dir={tmp_path / 'run'}")
    return args


def _check(case, tmp_path, code, stderr):
    name, _, message = CASES[case]
    assert code == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("lineas.")]
    assert len(lines) == 1 and lines[0].startswith(f"lineas.{name}: ") and message in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "foreign" / "thesis.tex").read_text() == "x" and (tmp_path / "file").read_text() == "keep"


@pytest.mark.slow  # spawns a process (one for all cases)
@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_line_and_exit_2(case, refused):
    _check(case, *refused[case])


def test_one_refusal_in_a_fresh_process(tmp_path):
    """As a user runs it: ``python -m lineas.export`` on a missing maps folder, in a process of its own."""
    proc = run_cli("lineas.export", *_args("export", _folder(tmp_path)))
    _check("export", tmp_path, proc.returncode, proc.stderr)


def test_a_full_disk_is_a_user_error_naming_the_file():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/run/maps/maps.safetensors")
    assert "no space left on the device writing /data/run/maps/maps.safetensors" in str(user_error(full))
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError("3145728 requested and 81120 written")  # torch.save's words for it
    assert "no space left on the device" in str(user_error(wrapped))
    assert user_error(RuntimeError("a bug")) is None
