"""Attaching maps to a model's sites with forward hooks; capturing site outputs; early exit; checkpointing."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as recomputed

from lineas.core.errors import SiteError
from lineas.core.sites import Site


class SiteMaps(Protocol):
    """What :func:`attach` needs of maps (:class:`lineas.core.maps.AffineMaps`): map site ``i``'s output
    (in float32; the hook casts it back to the model's dtype and captures the float32 value)."""

    def transform(self, i: int, t: torch.Tensor) -> torch.Tensor: ...


class StopForward(Exception):
    """Raised by the hook of the last site: nothing after it matters, so the forward ends there."""


def channel_dim(t: torch.Tensor) -> int:
    """Feature axis of a site output: channels of a 4-D feature map, else the last axis."""
    return 1 if t.ndim == 4 else -1


def _select(site: Site, out: Any) -> torch.Tensor:
    if site.index is None:
        if isinstance(out, torch.Tensor):
            return out
        hint = f"; write '{site.module}:k' to pick item k" if isinstance(out, tuple) else ""
        kind = f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__}"
        raise SiteError(f"site {site} outputs {kind}, not a tensor{hint}")
    if not isinstance(out, tuple):
        raise SiteError(f"site {site}: {site.module} outputs a {type(out).__name__}, not a tuple; drop ':{site.index}'")
    tensors = [k for k, item in enumerate(out) if isinstance(item, torch.Tensor)]
    if site.index >= len(out) or not isinstance(out[site.index], torch.Tensor):
        what = "has no item" if site.index >= len(out) else f"holds {type(out[site.index]).__name__} at item"
        raise SiteError(
            f"site {site}: the output of {site.module} (a tuple of {len(out)}) {what} {site.index}; "
            f"its tensor items are {tensors}: write '{site.module}:k' with k one of them"
        )
    return out[site.index]


def _replace(site: Site, out: Any, t: torch.Tensor) -> Any:
    if site.index is None:
        return t
    items = list(out)
    items[site.index] = t
    return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)  # namedtuple or tuple


@contextmanager
def attach(
    model: nn.Module,
    sites: Sequence[Site],
    maps: SiteMaps | None = None,
    capture: dict[Site, torch.Tensor] | None = None,
    stop_after: Site | None = None,
    checkpoint: Sequence[str] = (),
    accumulate: bool = False,
) -> Iterator[None]:
    """Within the block, ``maps`` (if any) act on ``sites``; outputs land in ``capture``.

    A site that fires several times in the block (a sampler's denoising steps) leaves its last output
    in ``capture``, or with ``accumulate`` all of them, concatenated along the feature axis in firing
    order: each (firing, feature) pair is then a dimension of its own.

    With ``stop_after``, the forward ends right after that site fires (``StopForward`` is
    raised by its hook and swallowed here). The modules named in ``checkpoint`` (blocks, none of
    which may hold ``stop_after``) run under activation checkpointing: their activations are
    recomputed in the backward pass instead of stored. Their sites' hooks are attached inside the
    checkpointed call, so the recomputation, which may happen after this block has exited, applies
    the maps again; a map of the module's own output is idempotent under that recomputation.
    """
    modules = dict(model.named_modules())
    by_module: dict[str, list[tuple[int, Site]]] = defaultdict(list)
    for i, site in enumerate(sites):
        if site.module not in modules:
            raise SiteError(
                f"site {site}: no module named {site.module!r} in {type(model).__name__}; "
                "were the maps fitted on another model?"
            )
        by_module[site.module].append((i, site))

    stop_module = stop_after.module if stop_after is not None else None

    def register(names: list[str]) -> list[torch.utils.hooks.RemovableHandle]:
        return [
            modules[n].register_forward_hook(_site_hook(by_module[n], maps, capture, n == stop_module, accumulate))
            for n in names
        ]

    inner: dict[str, list[str]] = {block: [n for n in by_module if n.startswith(block + ".")] for block in checkpoint}
    if stop_module is not None and any(stop_module in names for names in inner.values()):
        raise SiteError(f"cannot checkpoint the block holding the last site {stop_after}")
    handles = register([n for n in by_module if not any(n in names for names in inner.values())])
    patched = [
        (modules[block], _checkpointed(modules[block], lambda names=names: register(names)))
        for block, names in inner.items()
    ]
    try:
        yield
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
        for module, own in patched:
            if own is None:
                del module.forward
            else:
                module.forward = own


def _site_hook(
    entries: list[tuple[int, Site]],
    maps: SiteMaps | None,
    capture: dict[Site, torch.Tensor] | None,
    stop: bool,
    accumulate: bool,
) -> Callable:
    """The forward hook of one module: map (maps' site indices ``i``) and capture its sites; maybe stop."""

    def hook(module: nn.Module, args: Any, out: Any) -> Any:
        for i, site in entries:
            t = _select(site, out)
            if maps is not None:
                mapped = maps.transform(i, t)
                out = _replace(site, out, mapped.to(t.dtype))
                t = mapped
            if capture is not None:
                seen = capture.get(site) if accumulate else None
                capture[site] = t if seen is None else torch.cat((seen, t), channel_dim(t))
        if stop:
            raise StopForward
        return out

    return hook


def _checkpointed(module: nn.Module, hooks: Callable[[], list]) -> Callable | None:
    """Route ``module.forward`` through non-reentrant checkpointing with ``hooks()`` attached around
    every run of it (first pass and recomputation); returns the instance's own ``forward``, if any."""
    own = module.__dict__.get("forward")
    forward = module.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        handles = hooks()
        try:
            return forward(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()

    module.forward = lambda *args, **kwargs: recomputed(run, *args, use_reentrant=False, **kwargs)
    return own


def probe(model: nn.Module, sites: Sequence[Site], run: Callable[[], Any]) -> tuple[list[int], Site]:
    """Feature sizes of ``sites`` and the site that fires last, from one forward ``run()``."""
    capture: dict[Site, torch.Tensor] = {}
    with torch.no_grad(), attach(model, sites, capture=capture):
        run()
    missing = [str(s) for s in sites if s not in capture]
    if missing:
        raise SiteError(f"sites {missing} never fired during a forward pass: they are not on its path")
    dims = [capture[s].shape[channel_dim(capture[s])] for s in sites]
    return dims, list(capture)[-1]
