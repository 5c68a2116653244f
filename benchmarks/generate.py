"""Benchmark steered generation: tokens/s of the base model, live maps (hooks), and a merged checkpoint.

One model, ``--prompts`` prompts (the first lines of ``lineas/data/toxicity/prompts.txt``, left-padded
into ONE batch), greedy decoding of exactly ``--new-tokens`` new tokens per prompt
(``min_new_tokens = max_new_tokens``, so no variant stops early at EOS and every variant generates
the same count). The maps are RANDOM (``omega = 1 + 0.1 randn``, ``beta = 0.1 randn``, seed 0) on
``--sites``: the values do not matter for timing, only the sites (the same number of hooks and
elementwise ops as fitted maps).

Variants, all ``model.generate(**batch, do_sample=False, ...)`` on the same tokenized batch
(tokenizing and decoding text is not timed):

``base``
    The base model, no hooks.
``live``
    The same model inside ``with maps.apply(model, strength=1.0):`` (attaching and removing the
    hooks is inside the timed call): every site output of every forward (prefill + one per new
    token, KV cache on) goes through ``AffineMaps.transform``.
``merged``
    The checkpoint written by ``lineas.tasks.export.export(maps, DIR, strength=1.0)`` and loaded back with
    plain ``AutoModelForCausalLM.from_pretrained(DIR)``: the maps are in the weights (for Llama's
    ``mlp_out`` this turns on ``mlp_bias``, so gate/up/down projections all gain a bias, the first
    two zero-filled).

Each variant is warmed up once, then ``--rounds`` rounds time one call of each variant in turn
(interleaved, so load from other processes on a shared machine hits all alike); the table gives the
median tokens/s (new tokens of the whole batch / wall seconds), the mean and the best, then the
ratios ``live / base`` (goal >= 0.9) and ``merged / base`` (goal ~1) of the medians. It also says
whether live and merged generated the same tokens.

Examples::

    python benchmarks/generate.py --model tiny:llama --rounds 3
    python benchmarks/generate.py                       # SmolLM2-135M-Instruct, offline
    python benchmarks/generate.py --threads 1 --json /tmp/generate.json
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from typing import Any, Callable

import common
import torch

import lineas
from lineas.core.files import data_path
from lineas.core.hooks import probe
from lineas.models.causal_lm import load_causal_lm
from lineas.models.families import resolve_sites
from lineas.tasks.export import export

WARMUP = 1


def random_maps(
    model: torch.nn.Module, spec: str, sites: Any, batch: dict[str, torch.Tensor], scale: float = 0.1
) -> lineas.AffineMaps:
    sites = resolve_sites(model, sites)
    dims, _ = probe(model, sites, lambda: model(**batch))
    maps = lineas.AffineMaps(sites, dims, info={"base_model": spec, "model_type": model.config.model_type})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            w.add_(scale * torch.randn(w.shape, generator=gen))
            b.add_(scale * torch.randn(b.shape, generator=gen))
    return maps


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__)
    p.add_argument("--prompts", type=int, default=8, help="prompts in the batch")
    p.add_argument("--new-tokens", type=int, default=32, help="new tokens per prompt (exactly)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (one call of each variant per round)")
    return p.parse_args(argv)


def models(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, torch.Tensor], lineas.AffineMaps]:
    """The base model, its tokenizer (left padding), the merged checkpoint of random maps, the batch, the maps."""
    base, tok = load_causal_lm(args.model, args.dtype, args.device)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    lines = [s.strip() for s in open(data_path("toxicity/prompts.txt"), encoding="utf-8") if s.strip()]
    prompts = [lines[i % len(lines)] for i in range(args.prompts)]
    batch = tok(prompts, return_tensors="pt", padding=True).to(args.device)
    maps = random_maps(base, args.model, args.sites[0] if len(args.sites) == 1 else args.sites, batch).to(args.device)
    with tempfile.TemporaryDirectory(prefix="lineas-bench-") as tmp:
        export(maps, f"{tmp}/merged", strength=1.0, model=args.model, overwrite=True)
        merged, _ = load_causal_lm(f"{tmp}/merged", args.dtype, args.device)
    return base, tok, merged, batch, maps


def report(
    args: argparse.Namespace,
    maps: lineas.AffineMaps,
    width: int,
    seconds: dict[str, list[float]],
    outputs: dict[str, torch.Tensor],
    extra: int,
) -> dict[str, Any]:
    """Print the table, the ratios and the token checks; the result as a dict."""
    tps = {name: [args.prompts * args.new_tokens / s for s in t] for name, t in seconds.items()}
    median = {name: statistics.median(t) for name, t in tps.items()}
    mean = {name: sum(t) / len(t) for name, t in tps.items()}
    best = {name: max(t) for name, t in tps.items()}
    same = bool(torch.equal(outputs["live"], outputs["merged"]))
    steered = not torch.equal(outputs["live"], outputs["base"])
    print(
        f"model {args.model} ({args.dtype}, {args.device}, {torch.get_num_threads()} threads), {len(maps.sites)} "
        f"sites ({maps.sites[0]} .. {maps.sites[-1]}), batch {args.prompts} prompts (padded to {width} tokens) x "
        f"{args.new_tokens} new tokens, greedy, {args.rounds} timed rounds after {WARMUP} warm-up"
    )
    print(f"{'variant':<8} {'tokens/s':>9} {'mean':>9} {'best':>9}   (tokens/s = median)")
    for name in seconds:
        print(f"{name:<8} {median[name]:>9.1f} {mean[name]:>9.1f} {best[name]:>9.1f}")
    ratios = {"live / base": median["live"] / median["base"], "merged / base": median["merged"] / median["base"]}
    for name, r in ratios.items():
        print(f"{name:<14} {r:.3f}")
    print(
        f"live == merged tokens: {same}; live != base tokens: {steered}; "
        f"merged checkpoint has {extra} more parameters (biases)"
    )
    keys = ("model", "dtype", "device", "prompts", "new_tokens", "rounds")
    return {
        **{k: getattr(args, k) for k in keys},
        "threads": torch.get_num_threads(),
        "sites": [str(s) for s in maps.sites],
        "padded_width": width,
        "warmup": WARMUP,
        "seconds": seconds,
        "median_tokens_per_s": median,
        "mean_tokens_per_s": mean,
        "best_tokens_per_s": best,
        "ratios": ratios,
        "live_equals_merged": same,
        "live_differs_from_base": steered,
        "merged_extra_parameters": extra,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    base, tok, merged, batch, maps = models(args)
    extra = sum(p.numel() for p in merged.parameters()) - sum(p.numel() for p in base.parameters())
    n_new, width = args.new_tokens, batch["input_ids"].shape[1]
    kwargs = dict(do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=tok.pad_token_id)
    outputs: dict[str, torch.Tensor] = {}

    def call(model: torch.nn.Module, name: str, steer: bool = False) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad(), maps.apply(model, strength=1.0) if steer else contextlib.nullcontext():
                outputs[name] = model.generate(**batch, **kwargs)[:, width:]

        return step

    steps = {"base": call(base, "base"), "live": call(base, "live", steer=True), "merged": call(merged, "merged")}
    seconds = common.time_rounds(steps, args.rounds, torch.device(args.device), WARMUP)
    for name, ids in outputs.items():
        assert ids.shape == (args.prompts, n_new), (name, tuple(ids.shape))
    return common.finish(args, report(args, maps, width, seconds, outputs, extra))


if __name__ == "__main__":
    main()
