"""Files lineas writes and reads: their names, shipped data, and writes that never leave a half-written
output (write beside the target, then rename; modes follow the umask)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterator

from lineas.core.errors import OutputExistsError

MAPS_WEIGHTS = "maps.safetensors"  # a maps folder: the tensors ...
MAPS_CONFIG = "lineas.json"  # ... and what they are
GATE_WEIGHTS = "gate.safetensors"  # beside the maps, optional: a per-token gate (lineas.core.gate) ...
GATE_CONFIG = "gate.json"  # ... and how it was fitted
MERGE_RECORD = "lineas_merge.json"  # in a merged checkpoint: which maps at which strength
PIPELINE_SETTINGS = "lineas_pipeline.json"  # in a pipeline folder: the call settings lineas uses by default
GATE_FILES = ("gate.json", "gate.safetensors")  # in a maps folder, optionally: a per-token gate of the strength


def data_path(rel: str) -> str:
    """Path of a data file shipped with lineas (``lineas/data/REL``)."""
    return str(files("lineas") / "data" / rel)


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=true to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        _follow_umask(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _follow_umask(root: Path) -> None:
    # mkdtemp / mkstemp (used here and by libraries that write atomically) create 0700 / 0600
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for p in root.rglob("*"):
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines, atomically."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
