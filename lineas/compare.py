"""``python -m lineas.compare maps=[DIR1,DIR2,...] output_dir=OUT [labels=[...]] [key=value ...]``.

Evaluates several maps folders of one base model on the same prompts and seed and writes the trade-off:
``compare.md``, ``compare.json``, ``tradeoff.png``. The functions: :mod:`lineas.tasks.compare`;
settings: :class:`lineas.tasks.configs.CompareConfig` (every evaluation key applies).
"""

from lineas.cli.compare import run_compare
from lineas.cli.main import hydra_entry
from lineas.tasks.compare import compare

__all__ = ["compare", "run_compare"]

main = hydra_entry("compare", run_compare)

if __name__ == "__main__":
    main()
