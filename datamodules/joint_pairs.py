"""Several concepts' prompt pairs for one joint fit: each step, one source batch per concept."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch.utils.data import DataLoader

from lineas.core.errors import ConfigError
from lineas.datamodules.prompt_pair import PromptPairDataModule, Split


class JointPromptPairs(PromptPairDataModule):
    """``source``/``target``: the first concept's prompts (as :class:`PromptPairDataModule`); ``concepts``: the
    further concepts' pairs, a list of ``{source: ..., target: ...}`` (files or lists), each split and shuffled
    with the same settings (the other arguments of :class:`PromptPairDataModule`).

    ``train_dataloader`` gives one loader per concept, so each training batch is a list whose item ``k`` is
    concept ``k``'s source batch: :class:`lineas.training.module.LinEASModule` maps each towards its own target
    and sums the W2 terms. ``target_dataloader(split, concept=k)`` gives concept ``k``'s targets. Validation,
    held-out W2 and the fit summary report the first concept. With no further concept the fit is the ordinary one.
    """

    def __init__(
        self,
        source: str | Path | list[str],
        target: str | Path | list[str],
        *args: Any,
        concepts: Sequence[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(source, target, *args, **kwargs)
        if any(not isinstance(c, Mapping) or set(c) != {"source", "target"} for c in concepts):
            raise ConfigError(f"data.concepts={list(concepts)}: give a list of {{source: FILE, target: FILE}}")
        self.others = [PromptPairDataModule(c["source"], c["target"], *args, **kwargs) for c in concepts]

    @property
    def concepts(self) -> int:
        """How many concepts the fit maps (the first one included)."""
        return 1 + len(self.others)

    def fingerprint(self) -> str:
        """SHA-256 of every concept's prompts (see :meth:`PromptPairDataModule.fingerprint`)."""
        parts = [super().fingerprint(), *(p.fingerprint() for p in self.others)]
        return parts[0] if not self.others else hashlib.sha256("".join(parts).encode()).hexdigest()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "others": [p.state_dict() for p in self.others]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for part, saved in zip(self.others, state.get("others", [])):
            part.load_state_dict(saved)

    def train_dataloader(self) -> list[DataLoader]:
        for part in self.others:
            part.trainer = self.trainer  # each part draws its own stream for this trainer's steps
        return [super().train_dataloader(), *(p.train_dataloader() for p in self.others)]

    def target_dataloader(self, split: Split, concept: int = 0) -> DataLoader:
        return super().target_dataloader(split) if concept == 0 else self.others[concept - 1].target_dataloader(split)
