"""``python -m lineas.train recipe=NAME key=value ...``: fit LinEAS maps from a recipe.

``recipe`` is a shipped recipe name (``recipes/*.yaml``) or the path of your own YAML file.
Everything of a run goes under ``output_dir``: ``maps/``, ``fit_summary.json``, ``checkpoints/``,
TensorBoard logs (``tb/``) and Hydra's ``.hydra/`` record of the config. The base config is
``lineas/conf/train.yaml``; the fitting itself is :func:`lineas.cli.train.train` (a composed config)
or :func:`lineas.fit` (plain arguments, no Hydra).
"""

from lineas.cli.train import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":
    main()
