"""Gemma 2: sandwich norms, and RMSNorms that scale by ``1 + g``."""

from lineas.core.merge import FoldRules
from lineas.models.families.llama import ATTN_IN, LAYER, MLP_IN
from lineas.models.family import TINY_DECODER, Family, tiny_config

GEMMA2 = Family(
    "gemma2",
    presets={"attn_in": [LAYER + "input_layernorm"], "attn_out": [LAYER + r"self_attn\.o_proj"]},
    default_preset="attn_in",
    fold=FoldRules(
        {"input_layernorm": ATTN_IN, "pre_feedforward_layernorm": MLP_IN},
        {"attention_bias": [*ATTN_IN, "self_attn.o_proj"]},
        rmsnorm_offset=1.0,
    ),
    tiny=tiny_config("Gemma2Config", **TINY_DECODER, head_dim=16, query_pre_attn_scalar=16, sliding_window=128),
)
