"""``python -m lineas.evaluate maps=DIR [strengths=[0,0.5,1]] [key=value ...]``, or ``model=FOLDER`` (merged).

The concept score of sampled continuations (toxicity by default; ``scorer=lineas.metrics.Sentiment`` or any
:class:`lineas.metrics.ConceptScore`, or a list of them), their fluency and the perplexity of neutral sentences
at each strength; writes
``metrics.json``, ``metrics.png``, ``generations.jsonl`` and TensorBoard scalars. The functions:
:mod:`lineas.tasks.evaluate`; settings: :class:`lineas.tasks.configs.EvaluateConfig`.
"""

from lineas.cli.evaluate import run_evaluate
from lineas.cli.main import hydra_entry
from lineas.tasks.evaluate import evaluate

__all__ = ["evaluate", "run_evaluate"]

main = hydra_entry("evaluate", run_evaluate)

if __name__ == "__main__":
    main()
