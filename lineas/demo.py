"""``python -m lineas.demo maps=RUN/maps`` (several: ``maps=[A,B]``; or ``model=MERGED_FOLDER`` alone).

A local page (Gradio, on 127.0.0.1 unless ``host=`` says otherwise): one strength slider per maps folder,
base and steered continuations (or images) side by side, and an export of the merged model at the sliders'
values. Needs the ``demo`` extra (``pip install 'lineas[demo]'``). The page: :mod:`lineas.tasks.demo`;
settings: :class:`lineas.tasks.configs.DemoConfig`.
"""

from lineas.cli.demo import run_demo
from lineas.cli.main import hydra_entry

__all__ = ["run_demo"]

main = hydra_entry("demo", run_demo)

if __name__ == "__main__":
    main()
