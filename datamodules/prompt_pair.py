"""Source and target prompt sets, split into a fitting part and a held-out part."""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from lineas.core.errors import ConfigError, PromptFileError
from lineas.core.prompts import read_prompts

Split = Literal["fit", "heldout"]


def split_prompts(
    src: str | Path | list[str],
    num_fit: int | None = None,
    heldout_fraction: float = 0.25,
    seed: int = 0,
    text_field: str = "text",
    side: str = "prompt",
) -> dict[Split, list[str]]:
    """``{"fit": ..., "heldout": ...}``: the prompts of ``src`` shuffled with ``seed``, the first ``num_fit``
    (default: all but a ``heldout_fraction``) to fit, the rest held out; ``side`` names them in errors."""
    if not isinstance(src, (str, Path, list, tuple)):
        raise ConfigError(f"{side}={src!r}: give a prompt file (.txt, .jsonl, .csv) or a list of prompts")
    prompts = list(src) if isinstance(src, (list, tuple)) else read_prompts(src, text_field)
    random.Random(seed).shuffle(prompts)
    n_fit = num_fit if num_fit is not None else len(prompts) - round(heldout_fraction * len(prompts))
    fit, held = prompts[:n_fit], prompts[n_fit:]
    if len(fit) < 2 or len(held) == 1:
        raise PromptFileError(
            f"{side} prompts ({src if not isinstance(src, list) else 'list'}): {len(prompts)} "
            f"prompts give {len(fit)} to fit and {len(held)} held out; each part needs at least 2 "
            "(held out may be 0). Add prompts or change num_fit / heldout_fraction."
        )
    return {"fit": fit, "heldout": held}


class PromptStream(Sampler[int]):
    """Positions ``first`` .. ``last-1`` of an endless stream of permutations of ``n`` prompts drawn by one
    generator seeded with ``seed`` (the order of torch's ``RandomSampler`` with ``num_samples`` beyond ``n``).
    Step ``t`` of a fit reads positions ``t*batch_size`` .. ``(t+1)*batch_size - 1`` whatever ``first`` is, so a
    run resumed at step ``t`` draws exactly the batches an uninterrupted run draws. Without a ``seed``, one is
    drawn from torch's global generator when iteration starts, as ``RandomSampler`` draws it, and passed to
    ``keep_seed`` (the data module saves it in checkpoints).
    """

    def __init__(
        self, n: int, seed: int | None, first: int, last: int, keep_seed: Callable[[int], None] | None = None
    ) -> None:
        self.n, self.seed, self.first, self.last, self.keep_seed = n, seed, first, last, keep_seed

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __iter__(self) -> Iterator[int]:
        if self.seed is None:
            self.seed = int(torch.empty((), dtype=torch.int64).random_().item())
            if self.keep_seed is not None:
                self.keep_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        for lap in range(-(-self.last // self.n)):
            perm = torch.randperm(self.n, generator=g)
            lo, hi = max(self.first - lap * self.n, 0), min(self.last - lap * self.n, self.n)
            if lo < hi:
                yield from perm[lo:hi].tolist()


def check_split(batch_size: int, num_fit: int | None, heldout_fraction: float) -> None:
    """Refuse, in one line, a batch size or a split that cannot be used."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"data.batch_size={batch_size!r}: give a whole number of prompts, 1 or more")
    if num_fit is not None and (isinstance(num_fit, bool) or not isinstance(num_fit, int) or num_fit < 2):
        raise ConfigError(f"data.num_fit={num_fit!r}: give the number of prompts to fit on (2 or more), or null")
    if isinstance(heldout_fraction, bool) or not 0 <= heldout_fraction < 1:
        raise ConfigError(f"data.heldout_fraction={heldout_fraction!r}: give a fraction in [0, 1)")


class PromptPairDataModule(L.LightningDataModule):
    """Two unpaired prompt sets (``source``: steer away from, ``target``: steer towards).

    Each side is shuffled with ``seed``; the first ``num_fit`` prompts (default: all but a
    ``heldout_fraction``) are for fitting, the rest are held out and scored by validation.
    ``train_dataloader`` yields source batches; ``target_dataloader(split)`` the target side.
    ``collate_fn`` turns a list of prompts into a model batch (the backbone's ``collate``).
    Under DDP each rank draws ``batch_size`` source prompts per step (the global batch is
    ``world_size * batch_size``); held-out and target sets are scored whole on every rank.
    """

    def __init__(
        self,
        source: str | Path | list[str],
        target: str | Path | list[str],
        collate_fn: Callable[[list[str]], Any] | None = None,
        batch_size: int = 32,
        num_fit: int | None = None,
        heldout_fraction: float = 0.25,
        seed: int = 0,
        text_field: str = "text",
        eval_batch_size: int = 64,
    ) -> None:
        super().__init__()
        check_split(batch_size, num_fit, heldout_fraction)
        self.collate_fn = collate_fn
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.prompts: dict[str, dict[Split, list[str]]] = {}
        for side, src in (("source", source), ("target", target)):
            self.prompts[side] = split_prompts(src, num_fit, heldout_fraction, seed, text_field, side)
        if not self.has_heldout and (num_fit is not None or heldout_fraction > 0):
            warnings.warn(
                "no held-out prompts (num_fit takes them all): val/w2 and heldout_w2 are not measured", stacklevel=2
            )
        every = {side: sorted(p["fit"] + p["heldout"]) for side, p in self.prompts.items()}
        if every["source"] == every["target"]:
            warnings.warn("source and target prompts are the same: the maps have nothing to learn", stacklevel=2)
        self._stream_seed: int | None = None

    @property
    def has_heldout(self) -> bool:
        return bool(self.prompts["source"]["heldout"]) and bool(self.prompts["target"]["heldout"])

    def fingerprint(self) -> str:
        """SHA-256 of the prompts of both sides and splits (after shuffling with ``seed``): what the run fits on."""
        return hashlib.sha256(json.dumps(self.prompts, sort_keys=True).encode()).hexdigest()

    def state_dict(self) -> dict[str, Any]:
        return {"stream_seed": self._stream_seed, "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._stream_seed = state.get("stream_seed")

    def _keep_seed(self, seed: int) -> None:
        self._stream_seed = seed

    def _loader(self, prompts: list[str], batch_size: int) -> DataLoader:
        return DataLoader(prompts, batch_size=batch_size, collate_fn=self.collate_fn)

    def train_dataloader(self) -> DataLoader:
        # One epoch holds the whole run (max_steps batches of fresh permutations), so that the
        # progress bar counts steps, not one-batch epochs.
        fit = self.prompts["source"]["fit"]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # Each rank takes its share of every permutation; batch_size is per rank.
            sampler = DistributedSampler(
                fit, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=True, seed=self.seed
            )
            return DataLoader(fit, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate_fn)
        first = trainer.global_step * self.batch_size if trainer is not None else 0
        steps = trainer.max_steps if trainer is not None else -1
        last = steps * self.batch_size if steps > 0 else first + len(fit)  # no step limit: one permutation
        sampler = PromptStream(len(fit), self._stream_seed, first, last, self._keep_seed)
        return DataLoader(fit, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate_fn)

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_heldout:
            return []
        return self.source_dataloader("heldout")

    def source_dataloader(self, split: Split) -> DataLoader:
        return self._loader(self.prompts["source"][split], self.eval_batch_size)

    def target_dataloader(self, split: Split) -> DataLoader:
        return self._loader(self.prompts["target"][split], self.eval_batch_size)
