"""GPT-2: Conv1D projections with biases, LayerNorms with biases: every preset folds as is."""

from lineas.core.merge import FoldRules
from lineas.models.family import Family

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
)
