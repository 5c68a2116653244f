"""Source and target prompt sets, split into a fitting part and a held-out part."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Literal

import lightning as L
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from lineas.core.errors import PromptFileError
from lineas.core.prompts import read_prompts

Split = Literal["fit", "heldout"]


class PromptPairDataModule(L.LightningDataModule):
    """Two unpaired prompt sets (``source``: steer away from, ``target``: steer towards).

    Each side is shuffled with ``seed``; the first ``num_fit`` prompts (default: all but a
    ``heldout_fraction``) are for fitting, the rest are held out and scored by validation.
    ``train_dataloader`` yields source batches; ``target_dataloader(split)`` the target side.
    ``collate_fn`` turns a list of prompts into a model batch (the backbone's ``collate``).
    Under DDP each rank draws ``batch_size`` source prompts per step (the global batch is
    ``world_size * batch_size``); held-out and target sets are scored whole on every rank.
    """

    def __init__(self, source: str | Path | list[str], target: str | Path | list[str],
                 collate_fn: Callable[[list[str]], Any] | None = None, batch_size: int = 32,
                 num_fit: int | None = None, heldout_fraction: float = 0.25, seed: int = 0,
                 text_field: str = "text", eval_batch_size: int = 64) -> None:
        super().__init__()
        self.collate_fn = collate_fn
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.prompts: dict[str, dict[Split, list[str]]] = {}
        for side, src in (("source", source), ("target", target)):
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
            self.prompts[side] = {"fit": fit, "heldout": held}

    @property
    def has_heldout(self) -> bool:
        return bool(self.prompts["source"]["heldout"]) and bool(self.prompts["target"]["heldout"])

    def _loader(self, prompts: list[str], batch_size: int) -> DataLoader:
        return DataLoader(prompts, batch_size=batch_size, collate_fn=self.collate_fn)

    def train_dataloader(self) -> DataLoader:
        # One epoch holds the whole run (max_steps batches of fresh permutations), so that the
        # progress bar counts steps, not one-batch epochs.
        fit = self.prompts["source"]["fit"]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # Each rank takes its share of every permutation; batch_size is per rank.
            sampler = DistributedSampler(fit, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                         shuffle=True, seed=self.seed)
            return DataLoader(fit, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate_fn)
        steps = trainer.max_steps if trainer is not None and trainer.max_steps > 0 else 0
        sampler = RandomSampler(fit, num_samples=max(len(fit), steps * self.batch_size))
        return DataLoader(fit, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate_fn)

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_heldout:
            return []
        return self.source_dataloader("heldout")

    def source_dataloader(self, split: Split) -> DataLoader:
        return self._loader(self.prompts["source"][split], self.eval_batch_size)

    def target_dataloader(self, split: Split) -> DataLoader:
        return self._loader(self.prompts["target"][split], self.eval_batch_size)
