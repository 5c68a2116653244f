"""GPT-2: Conv1D projections with biases, LayerNorms with biases: every preset folds as is."""

from lineas.core.merge import FoldRules
from lineas.models.family import Family, tiny_config

BLOCK = r"transformer\.h\.\d+\."
GPT2 = Family(
    "gpt2",
    presets={
        "mlp_out": [BLOCK + r"mlp\.c_proj"],
        "attn_out": [BLOCK + r"attn\.c_proj"],
        "attn_in": [BLOCK + "ln_1"],
        "mlp_in": [BLOCK + "ln_2"],
    },
    default_preset="mlp_out",
    fold=FoldRules({"ln_1": ["attn.c_attn"], "ln_2": ["mlp.c_fc"]}),
    tiny=tiny_config(
        "GPT2Config",
        n_embd=64,
        n_layer=4,
        n_head=4,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=0.2,
    ),
)
