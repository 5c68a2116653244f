"""Llama-style decoders (Llama and SmolLM2, Mistral, Qwen2): pre-norm blocks with q/k/v/o and gate/up/down."""

from lineas.core.merge import FoldRules
from lineas.models.family import TINY_DECODER, Family, GGUFNames, tiny_config

ATTN_IN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
MLP_IN = ["mlp.gate_proj", "mlp.up_proj"]
LAYER = r"model\.layers\.\d+\."
NORM_CONSUMERS = {"input_layernorm": ATTN_IN, "post_attention_layernorm": MLP_IN}
NORM_PRESETS = {
    "attn_in": [LAYER + "input_layernorm"],
    "mlp_in": [LAYER + "post_attention_layernorm"],
    "norms": [LAYER + "input_layernorm", LAYER + "post_attention_layernorm"],  # both: 2 sites per layer
}

# llama.cpp's Llama architecture (its loader takes the optional q/k/v/o and ffn biases a merge adds)
LLAMA_GGUF = GGUFNames(
    layers=r"model\.layers\.(\d+)\.(.+)",
    layer={
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    },
    others={"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"},
)

LLAMA = Family(
    "llama",
    presets={"mlp_out": [LAYER + r"mlp\.down_proj"], "attn_out": [LAYER + r"self_attn\.o_proj"], **NORM_PRESETS},
    default_preset="mlp_out",
    # `mlp_bias` / `attention_bias` give every projection of the kind a bias: the shift's home
    fold=FoldRules(
        NORM_CONSUMERS, {"attention_bias": [*ATTN_IN, "self_attn.o_proj"], "mlp_bias": [*MLP_IN, "mlp.down_proj"]}
    ),
    tiny=tiny_config("LlamaConfig", **TINY_DECODER),
    gguf=LLAMA_GGUF,
)
# No bias flags: norm sites only (their shift goes to the q/k/v (Qwen2: biased) or gate/up consumers).
MISTRAL = Family(
    "mistral",
    presets=NORM_PRESETS,
    default_preset="attn_in",
    fold=FoldRules(NORM_CONSUMERS),
    tiny=tiny_config("MistralConfig", **TINY_DECODER, sliding_window=None),
)
QWEN2 = Family(
    "qwen2",
    presets={"attn_in": NORM_PRESETS["attn_in"]},
    default_preset="attn_in",
    fold=FoldRules(NORM_CONSUMERS),
    tiny=tiny_config("Qwen2Config", **TINY_DECODER),
)
