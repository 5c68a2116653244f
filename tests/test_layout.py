"""The architecture holds: import contracts (import-linter), a torch-only core, a lazy top-level package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

ENTRY_POINTS = ["train", "export", "generate", "evaluate", "compare", "gate", "demo", "compose"]


def stage_installed_layout(dest: Path) -> Path:
    """The package as it is installed (``callbacks/``, ``datamodules/``, ``recipes/`` inside ``lineas/``):
    import-linter reads packages from disk and does not follow the setuptools package-dir mapping."""
    skip = shutil.ignore_patterns("__pycache__", "data")
    shutil.copytree(ROOT / "lineas", dest / "lineas", ignore=skip)
    for folder in ("callbacks", "datamodules", "recipes"):
        shutil.copytree(ROOT / folder, dest / "lineas" / folder, ignore=skip)
    return dest


@pytest.mark.slow  # spawns a process
def test_import_contracts_are_kept(tmp_path):
    root = stage_installed_layout(tmp_path)
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "lint-imports (import-linter) is not installed: pip install -e '.[test]'"
    proc = subprocess.run(
        [lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in proc.stdout, proc.stdout[-2000:]


def _modules_after(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code + "; import sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return {m.split(".")[0] for m in proc.stdout.split()}


def test_core_imports_neither_lightning_nor_hydra():
    loaded = _modules_after(
        "import lineas.core.maps, lineas.core.merge, lineas.core.estimators, "
        "lineas.core.sparsity, lineas.core.blocks, lineas.core.prompts"
    )
    assert "torch" in loaded  # the check sees real imports
    assert not loaded & {"lightning", "hydra", "omegaconf", "transformers", "diffusers"}


@pytest.mark.slow  # spawns a process
def test_import_lineas_is_lazy():
    assert "torch" not in _modules_after("import lineas")
    loaded = _modules_after("import lineas; lineas.AffineMaps; lineas.resolve_sites; lineas.load_causal_lm")
    assert "torch" in loaded and not loaded & {"lightning", "hydra"}
    assert "lightning" in _modules_after("import lineas; lineas.LinEASModule")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_are_thin(name):
    lines = (ROOT / "lineas" / f"{name}.py").read_text().splitlines()
    assert len(lines) <= 60, f"lineas/{name}.py has {len(lines)} lines: move the work into a plain function"


def test_public_api_names_resolve():
    import lineas

    missing = [n for n in lineas.__all__ if getattr(lineas, n, None) is None]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lineas.nope  # noqa: B018
