"""The block stack of a model (decoder layers, transformer blocks) and the prefix cache it allows.

Maps sit at sites inside the blocks. Blocks before the first site's block do not depend on the
maps, so their output (the hidden states entering the first site's block) can be computed once per
prompt and reused: the forward then starts at that block (:class:`PrefixCache`). Blocks from the
first site's up to (not including) the last site's are the ones activation checkpointing recomputes
(:func:`lineas.core.hooks.attach`, ``checkpoint=``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from lineas.core.sites import Site


@dataclass(frozen=True)
class Stack:
    """The ``nn.ModuleList`` ``owner.<attr>`` (qualified name ``name``) that holds the sites."""

    owner: nn.Module
    attr: str
    name: str

    @property
    def blocks(self) -> nn.ModuleList:
        return getattr(self.owner, self.attr)

    def block_of(self, site: Site) -> int | None:
        """Index of the block holding ``site`` (None: the site is outside the stack)."""
        prefix = self.name + "."
        if not site.module.startswith(prefix):
            return None
        return int(site.module[len(prefix) :].split(".", 1)[0])

    def block_names(self, start: int, stop: int) -> list[str]:
        return [f"{self.name}.{i}" for i in range(start, stop)]


def find_stack(model: nn.Module, sites: Sequence[Site]) -> Stack | None:
    """The ``ModuleList`` holding the most sites (ties: the longer list); None if none holds any."""
    best, best_key = None, (0, 0)
    for name, m in model.named_modules():
        if not isinstance(m, nn.ModuleList) or not name:
            continue
        held = sum(s.module.startswith(name + ".") for s in sites)
        if (held, len(m)) > best_key:
            best, best_key = name, (held, len(m))
    if best is None:
        return None
    owner_name, _, attr = best.rpartition(".")
    return Stack(model.get_submodule(owner_name) if owner_name else model, attr, best)


def _hidden(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict[str, Any], h: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
    if args:
        return (h, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


class PrefixCache:
    """Per prompt, the hidden states entering block ``start`` of ``stack``; exact when no map acts before it.

    A prompt is identified by its row of token ids with padded positions set to -1 (``keys``). Rows are
    right-padded, and with causal attention a real position never sees a padded one, so a row's states
    at real positions do not depend on the batch it came in: rows are stored at the longest length
    seen and sliced to each batch's length.
    The stack's blocks must carry ONE hidden state from block to block, passed as their first
    argument or as ``hidden_states`` (true of the decoder stacks of transformers' causal LMs; not
    of two-stream blocks such as FLUX's, which also pass ``encoder_hidden_states``).
    """

    def __init__(self, stack: Stack, start: int) -> None:
        if start <= 0:
            raise ValueError(f"prefix cache at block {start}: nothing comes before it to cache")
        self.stack, self.start = stack, start
        self.ids: torch.Tensor | None = None  # (N, T) keys of the stored rows
        self.states: torch.Tensor | None = None  # (N, T, D) hidden states entering block `start`

    def _pad(self, ids: torch.Tensor, length: int) -> torch.Tensor:
        return nn.functional.pad(ids, (0, length - ids.shape[1]), value=-1)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor | None:
        """States ``(B, T, D)`` of every row of the keys ``ids`` ``(B, T)``, or None if one row is missing."""
        if self.ids is None or ids.shape[1] > self.ids.shape[1]:
            return None
        match = (self._pad(ids, self.ids.shape[1]).unsqueeze(1) == self.ids.to(ids.device).unsqueeze(0)).all(-1)
        if not bool(match.any(1).all()):
            return None
        return self.states[match.float().argmax(1).to(self.states.device), : ids.shape[1]]

    def store(self, ids: torch.Tensor, states: torch.Tensor) -> None:
        states = states.detach()
        if self.ids is None:
            self.ids, self.states = ids.clone(), states.clone()
            return
        length = max(ids.shape[1], self.ids.shape[1])
        old_ids, new_ids = self._pad(self.ids, length), self._pad(ids, length)
        grow = nn.functional.pad
        old = grow(self.states, (0, 0, 0, length - self.states.shape[1]))
        new = grow(states, (0, 0, 0, length - states.shape[1]))
        known = (new_ids.unsqueeze(1) == old_ids.unsqueeze(0)).all(-1).any(1)
        self.ids, self.states = torch.cat([old_ids, new_ids[~known]]), torch.cat([old, new[~known]])

    @contextmanager
    def __call__(self, ids: torch.Tensor) -> Iterator[None]:
        """Within the block, a forward of the batch with keys ``ids`` starts at block ``start`` if every row
        is cached; otherwise it runs whole and fills the cache."""
        blocks = self.stack.blocks
        first = blocks[self.start]
        states = self.lookup(ids)
        if states is None:

            def fill(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
                self.store(ids, _hidden(args, kwargs))

            handle = first.register_forward_pre_hook(fill, with_kwargs=True)
            try:
                yield
            finally:
                handle.remove()
            return

        def inject(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
            h = _hidden(args, kwargs)
            return _with_hidden(args, kwargs, states.to(h.device, h.dtype))

        handle = first.register_forward_pre_hook(inject, with_kwargs=True)
        setattr(self.stack.owner, self.stack.attr, blocks[self.start :])
        try:
            yield
        finally:
            setattr(self.stack.owner, self.stack.attr, blocks)
            handle.remove()
