"""A model family's table: its named site presets, the rules by which its sites fold into weights, its tiny random
config for tests, and its GGUF tensor names. Adding a family touches its file in ``families/`` and the registry."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from lineas.core.merge import FoldRules

# A tiny decoder for tests (hidden 64, 4 layers). Weights are drawn with std 0.2 (not the usual 0.02) so that
# activations have unit-ish scale.
TINY_DECODER = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
    tie_word_embeddings=True,
    initializer_range=0.2,
)


def tiny_config(class_name: str, **kwargs: Any) -> Callable[[int], Any]:
    """A builder of the transformers config ``class_name(vocab_size=..., **kwargs)``, given the vocabulary size."""

    def build(vocab_size: int) -> Any:
        import transformers

        return getattr(transformers, class_name)(vocab_size=vocab_size, **kwargs)

    return build


@dataclass(frozen=True)
class GGUFNames:
    """llama.cpp's names of a family's parameters: the modules of layer ``i`` (``blk.i.NAME``) and the others."""

    layers: str  # regex of a layer's module name, group 1 the layer index, group 2 the module within the layer
    layer: dict[str, str]
    others: dict[str, str]

    def name(self, hf_name: str) -> Optional[str]:
        """The GGUF name of a parameter (``model.layers.3.mlp.down_proj.bias`` -> ``blk.3.ffn_down.bias``)."""
        module, _, kind = hf_name.rpartition(".")
        m = re.fullmatch(self.layers, module)
        if m and m.group(2) in self.layer:
            return f"blk.{m.group(1)}.{self.layer[m.group(2)]}.{kind}"
        return f"{self.others[module]}.{kind}" if module in self.others else None


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
    tiny: Optional[Callable[[int], Any]] = None  # tiny:MODEL_TYPE, given the vocabulary size (None: no tiny model)
    gguf: Optional[GGUFNames] = None  # None: no GGUF export
    # diffusers families: the pipeline class, the fitting forward (backbone, prompts, device) -> denoiser output,
    # and the call settings beyond size, steps and guidance that the pipeline takes
    pipeline_class: Optional[str] = None
    denoise: Optional[Callable[..., Any]] = None
    call_keys: tuple[str, ...] = ()

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
