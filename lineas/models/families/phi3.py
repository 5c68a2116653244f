"""Phi-3: fused qkv and gate_up projections, no bias flags (norm sites, scale and shift into the fused layers)."""

from lineas.core.merge import FoldRules
from lineas.models.families.llama import NORM_PRESETS
from lineas.models.family import TINY_DECODER, Family, tiny_config

PHI3 = Family(
    "phi3",
    presets=NORM_PRESETS,
    default_preset="attn_in",
    fold=FoldRules({"input_layernorm": ["self_attn.qkv_proj"], "post_attention_layernorm": ["mlp.gate_up_proj"]}),
    tiny=tiny_config("Phi3Config", **TINY_DECODER),
)
