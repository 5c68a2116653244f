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
    The checkpoint written by ``lineas.export.export(maps, DIR, strength=1.0)`` and loaded back with
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

import gc
import statistics
import tempfile
import time
from typing import Any, Callable

import torch

import common
import lineas
from lineas.backbones import _dtype
from lineas.config import data_path
from lineas.export import export
from lineas.hooks import probe
from lineas.sites import resolve_sites

WARMUP = 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_maps(model: torch.nn.Module, spec: str, sites: Any, batch: dict[str, torch.Tensor],
                scale: float = 0.1) -> lineas.AffineMaps:
    sites = resolve_sites(model, sites)
    dims, _ = probe(model, sites, lambda: model(**batch))
    maps = lineas.AffineMaps(sites, dims, info={"base_model": spec, "model_type": model.config.model_type})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            w.add_(scale * torch.randn(w.shape, generator=gen))
            b.add_(scale * torch.randn(b.shape, generator=gen))
    return maps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = common.parser(__doc__)
    p.add_argument("--prompts", type=int, default=8, help="prompts in the batch")
    p.add_argument("--new-tokens", type=int, default=32, help="new tokens per prompt (exactly)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (one call of each variant per round)")
    args = p.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = _dtype(args.dtype)
    path = lineas.resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()

    lines = [s.strip() for s in open(data_path("toxicity/prompts.txt"), encoding="utf-8") if s.strip()]
    prompts = [lines[i % len(lines)] for i in range(args.prompts)]
    batch = tok(prompts, return_tensors="pt", padding=True).to(device)
    maps = random_maps(base, args.model, args.sites[0] if len(args.sites) == 1 else args.sites, batch).to(device)

    with tempfile.TemporaryDirectory(prefix="lineas-bench-") as tmp:
        export(maps, f"{tmp}/merged", strength=1.0, model=args.model, overwrite=True)
        merged = AutoModelForCausalLM.from_pretrained(f"{tmp}/merged", dtype=dtype).to(device).eval()
    extra = sum(p.numel() for p in merged.parameters()) - sum(p.numel() for p in base.parameters())

    n_new = args.new_tokens
    kwargs = dict(do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=tok.pad_token_id)
    width = batch["input_ids"].shape[1]
    outputs: dict[str, torch.Tensor] = {}

    def call(model: torch.nn.Module, name: str, steer: bool = False) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                if steer:
                    with maps.apply(model, strength=1.0):
                        ids = model.generate(**batch, **kwargs)
                else:
                    ids = model.generate(**batch, **kwargs)
            outputs[name] = ids[:, width:]

        return step

    steps = {"base": call(base, "base"), "live": call(base, "live", steer=True), "merged": call(merged, "merged")}
    for step in steps.values():
        for _ in range(WARMUP):
            step()
    for name, ids in outputs.items():
        assert ids.shape == (args.prompts, n_new), (name, tuple(ids.shape))
    sync(device)
    gc.collect()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            sync(device)
            seconds[name].append(time.perf_counter() - t0)

    n_tokens = args.prompts * n_new
    tps = {name: [n_tokens / s for s in t] for name, t in seconds.items()}
    median = {name: statistics.median(t) for name, t in tps.items()}
    mean = {name: sum(t) / len(t) for name, t in tps.items()}
    best = {name: max(t) for name, t in tps.items()}
    same = bool(torch.equal(outputs["live"], outputs["merged"]))
    steered = not torch.equal(outputs["live"], outputs["base"])

    print(f"model {args.model} ({args.dtype}, {device}, {torch.get_num_threads()} threads), "
          f"{len(maps.sites)} sites ({maps.sites[0]} .. {maps.sites[-1]}), batch {args.prompts} prompts "
          f"(padded to {width} tokens) x {n_new} new tokens, greedy, {args.rounds} timed rounds after {WARMUP} warm-up")
    print(f"{'variant':<8} {'tokens/s':>9} {'mean':>9} {'best':>9}   (tokens/s = median)")
    for name in steps:
        print(f"{name:<8} {median[name]:>9.1f} {mean[name]:>9.1f} {best[name]:>9.1f}")
    ratios = {"live / base": median["live"] / median["base"], "merged / base": median["merged"] / median["base"]}
    for name, r in ratios.items():
        print(f"{name:<14} {r:.3f}")
    print(f"live == merged tokens: {same}; live != base tokens: {steered}; "
          f"merged checkpoint has {extra} more parameters (biases)")

    result = {
        "model": args.model, "dtype": args.dtype, "device": str(device), "threads": torch.get_num_threads(),
        "sites": [str(s) for s in maps.sites], "prompts": args.prompts, "padded_width": width,
        "new_tokens": n_new, "rounds": args.rounds, "warmup": WARMUP, "seconds": seconds,
        "median_tokens_per_s": median, "mean_tokens_per_s": mean, "best_tokens_per_s": best, "ratios": ratios,
        "live_equals_merged": same, "live_differs_from_base": steered, "merged_extra_parameters": extra,
    }
    return common.finish(args, result)


if __name__ == "__main__":
    main()
