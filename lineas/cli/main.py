"""One way to run a task as ``python -m lineas.NAME key=value ...``: Hydra composes the config, the task
runs on its typed form, and a :class:`~lineas.core.errors.LineasError` is one line on stderr, exit 2."""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ContextManager, Iterator

import hydra
from omegaconf import DictConfig, OmegaConf

from lineas.conf import register
from lineas.core.errors import user_error


@contextmanager
def one_line_errors(name: str) -> Iterator[None]:
    """Print a user error raised inside the block as ``lineas.NAME: message`` and exit 2 (no traceback; an
    interrupted fit exits 128 + the signal's number)."""
    try:
        yield
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        print(f"lineas.{name}: {cause}", file=sys.stderr)
        raise SystemExit(getattr(cause, "exit_code", 2)) from None


def typed(cfg: DictConfig) -> Any:
    """The composed config as its schema's dataclass (a plain DictConfig where there is no schema)."""
    return OmegaConf.to_object(cfg) if OmegaConf.get_type(cfg) is not dict else cfg


def hydra_entry(
    name: str,
    task: Callable[[Any], Any],
    config_name: str | None = None,
    *,
    prepare: Callable[[list[str]], tuple[list[str], ContextManager]] | None = None,
    as_object: bool = True,
) -> Callable[[], None]:
    """The ``main`` of ``python -m lineas.NAME``: ``task`` on the config ``config_name`` (default NAME), as its
    schema's dataclass (``as_object``) or as the composed, schema-checked DictConfig.

    ``prepare(args)`` sees the command line first and returns the arguments Hydra gets and a context held while
    the task runs (``lineas.train``: recipe files registered, its claim on ``output_dir``).
    """

    @hydra.main(config_path="pkg://lineas.conf", config_name=config_name or name, version_base="1.3")
    def main(cfg: DictConfig) -> None:
        with one_line_errors(name):
            task(typed(cfg) if as_object else cfg)

    def run() -> None:
        register()
        given = list(sys.argv)
        with one_line_errors(name):
            args, held = prepare(given[1:]) if prepare is not None else (given[1:], nullcontext())
            with held:
                sys.argv = [given[0], *args]
                try:
                    main()
                finally:
                    sys.argv = given

    return run
