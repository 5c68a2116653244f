"""The disk cache of models built offline (converted SmolLM2, tiny random models): built once, atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from lineas.core.errors import OutputExistsError
from lineas.core.files import atomic_dir

FORMAT_TAG = "v2"  # bump when a cached folder's content changes


def cache_dir() -> Path:
    """``$LINEAS_CACHE``, else ``$XDG_CACHE_HOME/lineas``, else ``~/.cache/lineas``."""
    if "LINEAS_CACHE" in os.environ:
        return Path(os.environ["LINEAS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lineas"


def cached(name: str, build: Callable[[Path], None], marker: str = "config.json") -> Path:
    """A cache folder built once by ``build(tmp)`` (complete once it holds ``marker``); concurrent
    builders keep the first finished."""
    path = cache_dir() / f"{name}-{FORMAT_TAG}"
    if (path / marker).is_file():
        return path
    try:
        with atomic_dir(path, overwrite=False) as tmp:
            build(tmp)
    except OutputExistsError:
        pass  # another process finished first
    return path
