"""``python -m lineas.compose maps=[A,B] strengths=[a,b] output_dir=C [overwrite=true]``.

Writes one maps folder equal to ``A`` at strength ``a``, then ``B`` at strength ``b`` (any number of parts), at
strength 1: it applies live, merges (``python -m lineas.export maps=C``) and goes to GGUF like any maps folder.
The function: :func:`lineas.tasks.compose.compose` (also ``lineas.compose(...)``); settings:
:class:`lineas.tasks.configs.ComposeConfig`.
"""

import sys
import types

from lineas.cli.main import hydra_entry
from lineas.tasks.compose import compose
from lineas.tasks.configs import ComposeConfig

__all__ = ["compose"]


def run(cfg: ComposeConfig) -> None:
    maps = compose(cfg.maps, cfg.strengths, cfg.output_dir, overwrite=cfg.overwrite)
    print(f"composed maps ({len(maps.sites)} sites): {cfg.output_dir}")


class _Callable(types.ModuleType):
    """Importing this module binds ``lineas.compose`` to it: calling it then still composes."""

    def __call__(self, *args, **kwargs):
        return compose(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
main = hydra_entry("compose", run)

if __name__ == "__main__":
    main()
