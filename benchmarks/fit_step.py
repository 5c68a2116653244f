"""Benchmark one LinEAS fit step against a naive end-to-end step and a hook-free lower bound.

One model, one batch of ``--prompts`` source prompts and as many target prompts (toxic -> non-toxic
sentences shipped with lineas), each exactly ``--tokens`` tokens long (consecutive sentences are
joined, then truncated by the backbone's ``max_length``, so there is no padding). Every variant
trains float32 parameters with a fresh ``torch.optim.Adam`` (the module's lr and betas) and does
``backward + optimizer.step + zero_grad``; the maps are reset to identity before each variant.

Variants (each warmed up for 2 steps, then ``--steps`` rounds each timing one step of every variant
in turn with ``time.perf_counter``, so that load from other processes is shared alike):

``lineas``
    Our fit step: ``LinEASModule.pooled(batch, with_maps=True)`` (hooks apply the maps at every
    site and capture the outputs; ``early_exit=True`` ends the forward right after the last site)
    + ``site_w2`` against the target samples pooled and sorted ONCE before timing (as
    ``on_fit_start`` caches them) + ``loss.mean().backward()`` + Adam step + ``zero_grad``.
    Not included: Lightning's own loop overhead, ``training_step``'s finiteness check and
    logging, and ``optimizer_step``'s sparsity prox/support bookkeeping.

``naive``
    The same maps and loss, done the obvious way: the same module with ``early_exit=False`` so
    the forward runs the whole model to the logits (``lm_head`` included), and the target
    activations are RECOMPUTED every step (target prompts forwarded to the logits without maps,
    under ``torch.no_grad``, then pooled and sorted); then the same loss, backward, Adam step.
    No prefix cache (``--checkpointing``, if given, applies to it too).

``lower bound``
    Plain autograd through the stack the lineas step must traverse, with NO hooks at all. K is
    the number of decoder layers up to and including the one holding the last site; F is 0, or
    with ``--prefix-cache`` the layer of the first site (the lineas step then starts there). The
    decoder ``ModuleList`` of the base model is temporarily replaced by its layers F..K-1 and the
    final norm by ``nn.Identity``; the step computes the input embeddings, multiplies them by a
    trainable float32 per-channel scale (D parameters, initialised at 1), calls the base model's
    body (``model.model`` for Llama: rotary embeddings, causal mask, the decoder layers; no
    ``lm_head``) with ``inputs_embeds`` and the same attention mask, takes ``last_hidden_state
    .float().pow(2).mean()`` as the loss, backward (the gradient reaches the scale, so it flows
    through all those layers, as the maps' gradients do), Adam step on the scale, ``zero_grad``.
    With ``--checkpointing`` its layers are checkpointed too (non-reentrant).
    Compared with the lineas step it does slightly MORE model work: the residual add after the
    last site's layer and the backward through layer 0's attention and MLP input side (the lineas
    backward stops at the first site, layer 0's MLP output); it does LESS bookkeeping: no hooks,
    no pooling, no sort, no W2, S-times fewer optimizer parameters. With the default sites the
    last site is the last layer's ``down_proj``, so K is the whole stack.

Options of the module apply to the lineas step: ``--checkpointing`` (activation checkpointing of
the site blocks), ``--prefix-cache`` (hidden states before the first site's layer computed once;
with ``--first-layer F`` the sites start at layer F). ``--dtype bfloat16`` loads the base in bf16
(maps and loss stay float32); ``--shape gemma2-2b`` (or another of ``lineas.models.synthetic.MODEL_SHAPES``) builds
random weights with that model's real shapes on ``--device``.

The table gives the median seconds per timed step (robust to bursts of load on a shared machine),
the mean and the fastest step, the memory autograd keeps for the backward pass of one step
("saved MB": distinct storages packed by ``saved_tensors_hooks``, weights included) and, on CUDA,
the peak allocated memory of one step; then the ratios ``lineas / naive`` (goal <= 0.5) and
``lineas / lower bound`` (goal <= 1.25), from the medians.

Examples::

    python benchmarks/fit_step.py --model tiny:llama --steps 3
    python benchmarks/fit_step.py --steps 5
    python benchmarks/fit_step.py --steps 5 --layers 15 --json /tmp/fit_step.json
    python benchmarks/fit_step.py --steps 5 --first-layer 15 --prefix-cache
    python benchmarks/fit_step.py --shape gemma2-2b --dtype bfloat16 --device cuda --tokens 64 --checkpointing
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import re
import statistics
from dataclasses import dataclass
from itertools import cycle
from typing import Any, Callable, Iterator

import common
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

import lineas
from lineas.core.files import data_path
from lineas.core.sites import Site
from lineas.models.families import resolve_sites
from lineas.training.optim import make_optimizer

WARMUP = 2
_LAYER = re.compile(r"\.(?:layers|h|blocks)\.(\d+)(?:\.|$)")


def layer_of(site: Site) -> int | None:
    """Decoder layer index of a site (None for a site outside the layer stack)."""
    m = _LAYER.search("." + site.module)
    return int(m.group(1)) if m else None


def make_prompts(tokenizer: Any, path: str, n: int, tokens: int) -> list[str]:
    """``n`` prompts of at least ``tokens`` tokens: consecutive sentences of ``path`` joined."""
    sentences = cycle([s.strip() for s in open(path, encoding="utf-8") if s.strip()])
    prompts = []
    for _ in range(n):
        text = next(sentences)
        while len(tokenizer(text)["input_ids"]) < tokens:
            text += " " + next(sentences)
        prompts.append(text)
    return prompts


def memory(step: Callable[[], None], device: torch.device) -> dict[str, float]:
    """MB autograd saves for one call of ``step`` and, on CUDA, its peak allocated MB."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    common.sync(device)
    out = {"saved_MB": sum(storages.values()) / 2**20}
    if device.type == "cuda":
        out["peak_MB"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def reset_maps(maps: lineas.AffineMaps) -> None:
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            w.fill_(1.0)
            b.zero_()


def adam(module: lineas.LinEASModule, params: Any) -> torch.optim.Adam:
    return make_optimizer(module.optimizer_factory, params, module.lr)


def decoder_stack(base: nn.Module) -> tuple[nn.Module, str, str]:
    """``(body, layers_attr, norm_attr)`` of a causal LM: e.g. ``(model.model, "layers", "norm")``."""
    body = base.base_model
    layers = next((n for n, c in body.named_children() if isinstance(c, nn.ModuleList)), None)
    norm = next((n for n in ("norm", "ln_f", "final_layernorm") if hasattr(body, n)), None)
    if layers is None or norm is None:
        raise SystemExit(f"lower bound: cannot find the layer stack / final norm of {type(body).__name__}")
    return body, layers, norm


@contextlib.contextmanager
def truncated(body: nn.Module, layers_attr: str, norm_attr: str, f: int, k: int) -> Iterator[None]:
    """``body`` genuinely has only its layers ``f..k-1`` and no final norm inside the block."""
    layers, norm = getattr(body, layers_attr), getattr(body, norm_attr)
    setattr(body, layers_attr, layers[f:k])
    setattr(body, norm_attr, nn.Identity())
    try:
        yield
    finally:
        setattr(body, layers_attr, layers)
        setattr(body, norm_attr, norm)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__doc__)
    p.add_argument("--layers", type=int, default=None, help="keep only sites in the first L layers")
    p.add_argument("--first-layer", type=int, default=0, help="keep only sites in layers >= F")
    p.add_argument("--shape", default=None, help="random weights shaped like this model (lineas.models.synthetic)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing of the site blocks")
    p.add_argument("--prefix-cache", action="store_true", help="reuse hidden states before the first site")
    p.add_argument("--prompts", type=int, default=32, help="source prompts (and as many targets)")
    p.add_argument("--tokens", type=int, default=24, help="tokens per prompt")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    args = p.parse_args(argv)
    if args.shape:
        args.model = f"shape:{args.shape}"
    return args


@dataclass
class Setup:
    """The module under test, one source and one target batch, and the layers ``f..k-1`` a step must run."""

    args: argparse.Namespace
    device: torch.device
    module: lineas.LinEASModule
    source: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor]
    f: int
    k: int


def setup(args: argparse.Namespace) -> Setup:
    device = torch.device(args.device)
    backbone = lineas.CausalLM(args.model, dtype=args.dtype, max_length=args.tokens, device=args.device)
    base = backbone.model
    sites = resolve_sites(base, args.sites[0] if len(args.sites) == 1 else args.sites)
    last_kept = args.layers if args.layers is not None else base.config.num_hidden_layers
    sites = [s for s in sites if layer_of(s) is None or args.first_layer <= layer_of(s) < last_kept]
    if not sites:
        raise SystemExit(f"no site left in layers {args.first_layer}..{last_kept - 1}")
    module = lineas.LinEASModule(
        backbone,
        sites=[str(s) for s in sites],
        early_exit=True,
        checkpointing=args.checkpointing,
        prefix_cache=args.prefix_cache,
    ).to(device)
    last = layer_of(module.last_site)
    k = base.config.num_hidden_layers if last is None else last + 1
    f = module._prefix.start if module._prefix is not None else 0
    batches = [
        move_data_to_device(
            backbone.collate(
                make_prompts(backbone.tokenizer, data_path(f"toxicity/{name}.txt"), args.prompts, args.tokens)
            ),
            device,
        )
        for name in ("toxic", "nontoxic")
    ]
    for batch in batches:
        assert batch["input_ids"].shape == (args.prompts, args.tokens), batch["input_ids"].shape
        assert bool(batch["attention_mask"].all())
    return Setup(args, device, module, *batches, f, k)


def lineas_step(b: Setup) -> Callable[[], None]:
    """Our step: targets pooled and sorted once beforehand (not timed), early exit, prefix cache if asked."""
    module = b.module
    with torch.no_grad():
        cached = [t.sort(0).values for t in module.pooled(b.target, with_maps=False)]
    opt = adam(module, module.maps.parameters())

    def step() -> None:
        loss = module.site_w2(module.pooled(b.source, with_maps=True), cached).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def naive_step(b: Setup) -> Callable[[], None]:
    """A naive step: both sides run through the whole model every step, no early exit, no prefix cache."""
    module = b.module
    opt = adam(module, module.maps.parameters())

    def step() -> None:
        prefix, module._prefix, module.early_exit = module._prefix, None, False
        try:
            with torch.no_grad():
                tgt = [t.sort(0).values for t in module.pooled(b.target, with_maps=False)]
            loss = module.site_w2(module.pooled(b.source, with_maps=True), tgt).mean()
        finally:
            module._prefix, module.early_exit = prefix, True
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def lower_step(b: Setup) -> Callable[[], None]:
    """The lower bound: forward and backward through layers ``f..k-1`` alone, one trainable scale."""
    base = b.module.base
    body, layers_attr, norm_attr = decoder_stack(base)
    embed = base.get_input_embeddings()
    scale = nn.Parameter(torch.ones(embed.weight.shape[1], device=b.device))
    opt = adam(b.module, [scale])
    kept = [f"{layers_attr}.{i}" for i in range(b.k - b.f)] if b.args.checkpointing else []

    def step() -> None:
        with truncated(body, layers_attr, norm_attr, b.f, b.k), lineas.attach(body, [], checkpoint=kept):
            h = embed(b.source["input_ids"])
            h = (h.float() * scale).to(h.dtype)
            out = body(inputs_embeds=h, attention_mask=b.source["attention_mask"], use_cache=False)
            loss = out.last_hidden_state.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def report(b: Setup, times: dict[str, list[float]], mem: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Print the table and the ratios; the result as a dict."""
    args, device, module = b.args, b.device, b.module
    mean = {name: sum(t) / len(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    n_layers = module.base.config.num_hidden_layers
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    options = [o for o, on in (("checkpointing", args.checkpointing), ("prefix cache", args.prefix_cache)) if on]
    print(
        f"model {args.model} ({args.dtype}, {device}: {device_name}, {torch.get_num_threads()} threads), "
        f"{len(module.sites)} sites ({module.sites[0]} .. {module.last_site}), "
        f"layers F..K-1 = {b.f}..{b.k - 1} of {n_layers}, {args.prompts} prompts x {args.tokens} tokens, "
        f"{args.steps} timed steps after {WARMUP} warm-up; options: {', '.join(options) or 'none'}"
    )
    cuda = device.type == "cuda"
    print(
        f"{'variant':<12} {'s/step':>9} {'mean':>9} {'min':>9} {'saved MB':>9}"
        + (f" {'peak MB':>9}" if cuda else "")
        + "   (s/step = median)"
    )
    for name, t in times.items():
        print(
            f"{name:<12} {median[name]:>9.4f} {mean[name]:>9.4f} {min(t):>9.4f} {mem[name]['saved_MB']:>9.1f}"
            + (f" {mem[name]['peak_MB']:>9.1f}" if cuda else "")
        )
    ratios = {
        "lineas / naive": median["lineas"] / median["naive"],
        "lineas / lower bound": median["lineas"] / median["lower bound"],
    }
    for name, r in ratios.items():
        print(f"{name:<21} {r:.3f}")
    return {
        "model": args.model,
        "dtype": args.dtype,
        "device": str(device),
        "device_name": device_name,
        "threads": torch.get_num_threads(),
        "checkpointing": args.checkpointing,
        "prefix_cache": args.prefix_cache,
        "sites": [str(s) for s in module.sites],
        "last_site": str(module.last_site),
        "F": b.f,
        "K": b.k,
        "num_layers": n_layers,
        "prompts": args.prompts,
        "tokens": args.tokens,
        "steps": args.steps,
        "warmup": WARMUP,
        "seconds": times,
        "memory": mem,
        "median_s_per_step": median,
        "mean_s_per_step": mean,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = setup(args)
    reset_maps(b.module.maps)
    steps = {"lineas": lineas_step(b), "naive": naive_step(b), "lower bound": lower_step(b)}
    mem = {name: memory(step, b.device) for name, step in steps.items()}
    times = common.time_rounds(steps, args.steps, b.device, WARMUP)
    return common.finish(args, report(b, times, mem))


if __name__ == "__main__":
    main()
