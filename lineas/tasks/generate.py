"""Steered text side by side: continuations of prompts at several strengths of the maps.

Maps fitted on a diffusers pipeline (or ``model=`` a pipeline folder, e.g. a merged one) give images
instead: a grid PNG (``image_grid``, rows = prompt x seed, columns = strengths) made by
:func:`lineas.tasks.images.render` with the folder's call settings, overridable as ``pipeline.KEY=VALUE``.

For each prompt of ``prompts`` (``.txt``, ``.jsonl`` or ``.csv``; see
:func:`lineas.core.prompts.read_prompts`) one continuation is generated per strength, with the maps
attached to their base model (``maps.info["base_model"]``, or ``model=``).
``model=FOLDER`` without ``maps`` generates from that model alone (a merged checkpoint written by
``python -m lineas.export``, or any model spec): ``strengths`` is then ignored and the single column
is called ``merged`` (a folder holding ``lineas_merge.json``) or ``model``.

``python -m lineas.generate`` (:mod:`lineas.cli.generate`) prints a readable table (each prompt, then its
continuations) and writes ``output`` (default ``generations.jsonl``: one row per prompt x strength with
``prompt``, ``strength``, ``continuation`` and ``column``, the table header) atomically, and with ``tb_dir=DIR``
the same table as TensorBoard text (tag ``generations``); the tables: :mod:`lineas.tasks.tables`. Sampling
settings (:class:`lineas.tasks.configs.Sampling`: ``max_new_tokens``, ``do_sample``, ``temperature``,
``top_p``, ``seed``, ``batch_size``, ``chat_template``) are overridden as ``sampling.KEY=VALUE``.

Steering semantics
------------------
``maps.apply(model)`` attaches forward hooks that map EVERY position of each site's output.
During generation that means the prompt tokens in the prefill forward, and then each newly
generated token in its own decoding forward. With the KV cache, the keys and values cached for
earlier positions were computed from activations that had already been steered (every site
upstream of an attention layer was mapped when those positions went through it), so the cache is
exactly what a merged checkpoint (``lineas.export``, which steers all positions by construction,
the map being folded into the weights) would have cached: live maps and the merged checkpoint
generate the same tokens, with or without the cache (``use_cache=False`` recomputes all positions
each step, all of them steered again). Padding positions are mapped too; they are masked out of
attention, so they change nothing.

Seeding: the random generators are reset to ``seed`` before the first batch of EACH strength (and
restored afterwards: the caller's random state is left as it was), so strength 0 (the identity map,
exactly) samples the same text as the base model with the same seed, and each strength's column
does not depend on which other strengths were asked for. ``seed=None`` does not seed.

Notebook use::

    from lineas.tasks.generate import generate
    rows = generate(model, tokenizer, ["The referee was such a"], maps=maps, strengths=(0, 1),
                    max_new_tokens=20, do_sample=False)   # or sampling=Sampling(...)
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import fields, replace
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from lineas.core.errors import ConfigError
from lineas.core.maps import AffineMaps
from lineas.models.causal_lm import context_length
from lineas.tasks.configs import Sampling


def _label(strength: float | None, label: str | None = None) -> str:
    if label is not None:
        return label
    return "model" if strength is None else f"{strength:g}"


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's generators inside the block; the caller's random state is restored after."""
    if seed is None:
        yield
        return
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


@contextmanager
def _left_padded(tokenizer: Any) -> Iterator[Any]:
    """Left padding inside the block (a decoder-only model continues from the last position)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    saved = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = saved


@contextmanager
def _contiguous_head(model: nn.Module) -> Iterator[None]:
    """The output head gets a contiguous input inside the block.

    Workaround: at the first step of ``generate``, transformers feeds the head ``hidden[:, -1:, :]``, a
    strided slice, and ``F.linear`` on a strided 3-D input materialises one copy of the weight per row on
    CPU: a SmolLM2 head (49152 x 576) took 1.83 s in bfloat16 (0.20 s in float32) against 0.013 s
    (0.039 s) on the same rows made contiguous, for 16 prompts.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def format_prompts(tokenizer: Any, prompts: Sequence[str], chat_template: bool) -> list[str]:
    """The texts fed to the model: the prompts, or each wrapped as a user message of the chat template."""
    if not chat_template:
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("chat_template=true, but this tokenizer has no chat template; use chat_template=false")
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    maps: AffineMaps | None = None,
    strengths: Sequence[float] = (1.0,),
    sampling: Sampling | None = None,
    *,
    progress: bool = True,
    label: str | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Continuations of ``prompts`` by ``model``, steered by ``maps`` at each of ``strengths``.

    Returns one row per prompt x strength, prompt-major: ``{"prompt", "strength", "continuation",
    "column"}`` (``column``: the table header, e.g. ``"0.5"``). Without ``maps``, ``strengths`` is
    ignored: one row per prompt, ``strength`` None, column ``label`` (default ``"model"``).
    ``sampling`` (default :class:`Sampling`) is updated by any of its fields given in ``kwargs``; the other
    ``kwargs`` (``use_cache``, ``min_new_tokens``, ...) go to ``model.generate``. Prompts are left-padded
    in batches of ``sampling.batch_size`` (the tokenizer gets ``pad_token = eos`` if it has none; its
    padding side is restored). See the module docstring for seeding and what the maps steer.
    """
    from tqdm.auto import tqdm

    names = {f.name for f in fields(Sampling)}
    sampling = replace(sampling or Sampling(), **{k: kwargs.pop(k) for k in names & set(kwargs)})
    batch_size, seed = sampling.batch_size, sampling.seed
    prompts = list(prompts)
    columns: list[float | None] = [float(s) for s in strengths] if maps is not None else [None]
    if maps is not None and not columns:
        raise ConfigError("no strengths given")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    texts = format_prompts(tokenizer, prompts, sampling.chat_template)
    check_context(model, tokenizer, texts, sampling.max_new_tokens, not sampling.chat_template)
    device = next(model.parameters()).device
    kwargs.update(max_new_tokens=sampling.max_new_tokens, do_sample=sampling.do_sample)
    if sampling.do_sample:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    out: dict[float | None, list[str]] = {}
    was_training = model.training
    model.eval()
    try:
        with (
            _left_padded(tokenizer),
            _contiguous_head(model),
            tqdm(total=len(columns) * len(batches), desc="generate", unit="batch", disable=not progress) as bar,
        ):
            kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
            for lam in columns:
                steer = maps.apply(model, strength=lam) if maps is not None else nullcontext()
                with _seeded(seed, device), steer, torch.no_grad():
                    out[lam] = [
                        text
                        for batch in batches
                        for text in _continue(model, tokenizer, batch, not sampling.chat_template, kwargs, bar)
                    ]
    finally:
        model.train(was_training)
    return [
        {"prompt": p, "strength": lam, "continuation": out[lam][i], "column": _label(lam, label)}
        for i, p in enumerate(prompts)
        for lam in columns
    ]


def check_context(model: nn.Module, tokenizer: Any, texts: list[str], new_tokens: int, special: bool) -> None:
    """Refuse prompts that, with ``new_tokens`` more, do not fit the model's context (one line naming the limit)."""
    limit = context_length(model)
    if limit is None or not texts:
        return
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
    longest = max(range(len(texts)), key=lengths.__getitem__)
    if lengths[longest] + new_tokens > limit:
        raise ConfigError(
            f"prompt {longest + 1} is {lengths[longest]} tokens: with sampling.max_new_tokens={new_tokens} it does "
            f"not fit the model's context of {limit} tokens; shorten the prompts or lower max_new_tokens"
        )


def _continue(
    model: nn.Module, tokenizer: Any, batch: list[str], special_tokens: bool, kwargs: dict[str, Any], bar: Any
) -> list[str]:
    """The new text of one batch of prompts (left-padded)."""
    enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=special_tokens)
    enc = enc.to(next(model.parameters()).device)
    ids = model.generate(**enc, **kwargs)
    bar.update(1)
    return tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def check_device(device: str | None) -> str:
    """``device``, or cuda if there is one else cpu; refuses a CUDA device this machine does not have."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        where = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r}: give cpu, cuda or cuda:N") from None
    if where.type == "cuda" and (not torch.cuda.is_available() or (where.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device={device}: this machine has no such CUDA device; use device=cpu")
    return device
