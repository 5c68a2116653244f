"""Hydra wiring: the ``recipe`` config group from ``recipes/``, user recipe files, the typed schemas of the
task configs, the ``lineas_data`` resolver."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from lineas.core.errors import ConfigError
from lineas.core.files import data_path
from lineas.tasks.configs import (
    CompareConfig,
    ComposeConfig,
    DemoConfig,
    EvaluateConfig,
    ExportConfig,
    GateConfig,
    GenerateConfig,
)

USER_PREFIX = "file_"
SCHEMAS = {
    "export": ExportConfig,
    "generate": GenerateConfig,
    "evaluate": EvaluateConfig,
    "compare": CompareConfig,
    "gate": GateConfig,
    "demo": DemoConfig,
    "compose": ComposeConfig,
}


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in files("lineas.recipes").iterdir() if p.name.endswith(".yaml"))


def register() -> None:
    """Register the shipped recipes under group ``recipe``, the task schemas (``NAME_schema``) and the
    ``lineas_data`` resolver."""
    if not OmegaConf.has_resolver("lineas_data"):
        OmegaConf.register_new_resolver("lineas_data", data_path)
    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema)
    for name in recipe_names():
        cs.store(
            group="recipe",
            name=name,
            package="_global_",
            node=OmegaConf.create((files("lineas.recipes") / f"{name}.yaml").read_text()),
        )


def register_recipe_file(path: str | Path) -> str:
    """Register a user's recipe YAML; returns the name to select it with (``recipe=NAME``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist (paths are relative to {Path.cwd()})")
    try:
        node = OmegaConf.load(path)
    except Exception as err:  # yaml's errors carry the line and column
        raise ConfigError(f"recipe file {path} is not valid YAML: {err}") from None
    name = USER_PREFIX + "".join(c if c.isalnum() else "_" for c in path.stem)
    ConfigStore.instance().store(group="recipe", name=name, package="_global_", node=node)
    return name
