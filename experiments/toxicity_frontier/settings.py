"""The settings of the toxicity frontier search on SmolLM2, in the order they are run.

Each setting is a name and its overrides of ``python -m lineas.train`` on top of the default recipe
(``toxicity_smollm2``: 32 + 32 sentences). Stage A crosses sites x optimizer x normalize; stages B-D
are added once stage A has picked the best site set (see README.md: the rule was written first).
"""

from __future__ import annotations

# sites: the presets of the Llama family (SmolLM2), and both norms at once
SITES = {
    "mlp_out": "mlp_out",  # mlp.down_proj outputs
    "mlp_in": "mlp_in",  # post_attention_layernorm outputs
    "attn_in": "attn_in",  # input_layernorm outputs
    "norms": "norms",  # input_layernorm + post_attention_layernorm
}
# Adam at the default's CPU schedule; SGD as the authors' toxicity recipe runs it, at lr 0.1, on a CPU budget
OPTIMIZERS = {
    "adam30": ["optimizer=adam", "module.lr=3e-2", "trainer.max_steps=30"],
    "sgd100": ["optimizer=sgd", "module.lr=0.1", "trainer.max_steps=100"],
}
NORMALIZE = {"norm": ["module.normalize=true"], "raw": ["module.normalize=false"]}


def stage_a() -> dict[str, list[str]]:
    """sites x optimizer x normalize, at the default's L1 (1e-4) and mean pooling."""
    return {
        f"{s}-{o}-{n}": [f"module.sites={preset}", *opt, *norm]
        for s, preset in SITES.items()
        for o, opt in OPTIMIZERS.items()
        for n, norm in NORMALIZE.items()
    }


SETTINGS: dict[str, list[str]] = stage_a()
