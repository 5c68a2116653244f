"""A model family's table: its named site presets and the rules by which its sites fold into weights."""

from __future__ import annotations

from dataclasses import dataclass, field

from lineas.core.merge import FoldRules


@dataclass(frozen=True)
class Family:
    """One ``config.model_type`` (or diffusers pipeline family): presets and fold rules.

    Every preset names module outputs that fold into ordinary weights (docs/method.md#merging-into-weights)
    unless its comment says "live only": Linear outputs with a bias home, and norms that feed only Linear layers.
    """

    model_type: str
    presets: dict[str, list[str]]
    default_preset: str
    fold: FoldRules = field(default_factory=FoldRules)

    def __post_init__(self) -> None:
        if self.default_preset not in self.presets:
            raise ValueError(f"{self.model_type}: default preset {self.default_preset!r} is not a preset")

    @property
    def rules(self) -> FoldRules:
        """The fold rules, with this family's presets as the hint of merge errors."""
        return FoldRules(
            self.fold.consumers,
            self.fold.bias_flags,
            self.fold.rmsnorm_offset,
            f"presets for {self.model_type}: {sorted(self.presets)}",
        )
