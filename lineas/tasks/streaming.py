"""One prompt's continuation streamed token by token, with :func:`lineas.tasks.generate.generate`'s seeding:
the base model's and the steered model's from the same seed, one after the other (the hooks steer every
forward of the model while attached, so the two cannot run at once)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from threading import Thread
from typing import Any, Iterator

from torch import nn

from lineas.tasks.configs import Sampling
from lineas.tasks.generate import generate


def stream(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    sampling: Sampling,
    steer: AbstractContextManager | None = None,
) -> Iterator[str]:
    """The continuation of ``prompt`` as it grows (inside ``steer``, if given); the last item is the whole
    continuation, exactly as :func:`generate` returns it."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    done: dict[str, Any] = {}

    def work() -> None:
        try:
            with steer or nullcontext():
                rows = generate(
                    model,
                    tokenizer,
                    [prompt],
                    sampling=replace(sampling, batch_size=1),
                    progress=False,
                    streamer=streamer,
                )
            done["text"] = rows[0]["continuation"]
        except BaseException as err:  # handed to the reader, which raises it
            done["error"] = err
            streamer.end()

    worker = Thread(target=work, daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    worker.join()
    if "error" in done:
        raise done["error"]
    yield done["text"]


def stream_pair(
    model: nn.Module, tokenizer: Any, prompt: str, sampling: Sampling, steer: AbstractContextManager
) -> Iterator[tuple[str, str]]:
    """``(base, steered)`` continuations as they grow: the base model's first, then the steered one's, each
    from ``sampling.seed`` (so strength 0 repeats the base continuation)."""
    base = ""
    for base in stream(model, tokenizer, prompt, sampling):
        yield base, ""
    for steered in stream(model, tokenizer, prompt, sampling, steer):
        yield base, steered
