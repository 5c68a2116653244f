"""``python -m lineas.gate maps=RUN/maps output_dir=RUN/maps_gated [control=FILE] [measure=[FILE,...]]``.

Fits a per-token gate for a maps folder after the fact (post hoc DSAS): per site, a logistic probe on a few
principal directions of the base model's activations, the maps' source prompts against a neutral control set,
split into fit and held-out parts as the maps' fit split them (:func:`lineas.datamodules.split_prompts`, same
``seed`` and ``num_fit``). The functions: :mod:`lineas.tasks.gate`; settings:
:class:`lineas.tasks.configs.GateConfig`.
"""

from lineas.cli.gate import run, run_gate
from lineas.cli.main import hydra_entry
from lineas.tasks.gate import fit_posthoc, mean_gate

__all__ = ["fit_posthoc", "mean_gate", "run_gate"]

main = hydra_entry("gate", run)

if __name__ == "__main__":
    main()
