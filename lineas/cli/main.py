"""One way to run a task as ``python -m lineas.NAME key=value ...``: Hydra composes the config, the task
runs on its typed form, and a :class:`~lineas.core.errors.LineasError` is one line on stderr, exit 2."""

from __future__ import annotations

import errno
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import hydra
from omegaconf import DictConfig, OmegaConf

from lineas.cli.recipes import register
from lineas.core.errors import LineasError


def user_error(err: BaseException | None) -> LineasError | None:
    """The :class:`LineasError` behind ``err``, if any (Hydra's ``instantiate`` wraps what a target raises); a
    full disk is one too (the outputs are written beside and renamed, so nothing half-written is left)."""
    while err is not None and not isinstance(err, LineasError):
        if _disk_full(err):
            where = f" writing {err.filename}" if getattr(err, "filename", None) else ""
            return LineasError(f"no space left on the device{where}: free some space and run again ({err})")
        err = err.__cause__
    return err


def _disk_full(err: BaseException) -> bool:
    """An OSError of a full disk or quota, or a library's error that says so (safetensors, torch.save)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or ("requested and" in text and "written" in text)


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


def hydra_entry(name: str, task: Callable[[Any], Any], config_name: str | None = None) -> Callable[[], None]:
    """The ``main`` of ``python -m lineas.NAME``: ``task`` on the typed config ``config_name`` (default NAME)."""

    @hydra.main(config_path="pkg://lineas.conf", config_name=config_name or name, version_base="1.3")
    def main(cfg: DictConfig) -> None:
        with one_line_errors(name):
            task(typed(cfg))

    def run() -> None:
        register()
        main()

    return run
