"""``python -m lineas.generate maps=DIR prompts=FILE [strengths=[0,0.5,1]] [sampling.KEY=VALUE ...]``.

Continuations of each prompt at each strength, side by side (a table on stdout, ``generations.jsonl``);
``model=FOLDER`` alone generates from a model as it is (e.g. a merged checkpoint); maps of a diffusers
pipeline give an image grid. The functions: :mod:`lineas.tasks.generate`; settings:
:class:`lineas.tasks.configs.GenerateConfig`.
"""

from lineas.cli.generate import run_generate
from lineas.cli.main import hydra_entry
from lineas.tasks.generate import generate

__all__ = ["generate", "run_generate"]

main = hydra_entry("generate", run_generate)

if __name__ == "__main__":
    main()
