"""Several maps folders on one base model, used together: each folder's maps attach in the order given, each at
its own strength (stacked live hooks: at a site that two folders map, the first folder's map runs first), and
the merged checkpoint of the stack at those strengths, written with :func:`lineas.tasks.export.export`."""

from __future__ import annotations

import shlex
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from lineas.core.errors import ConfigError
from lineas.core.files import atomic_dir
from lineas.core.maps import AffineMaps, check_strength
from lineas.tasks.export import export
from lineas.tasks.gguf import export_gguf
from lineas.tasks.steered import Steering, load_steering

MERGED, GGUF = "merged", "gguf"  # the export folder's parts, as in a training run's folder


@dataclass
class Stack:
    """The maps of ``folders`` (in order) on the model of ``spec``; ``model`` is the user's ``model=``, if any."""

    spec: str
    folders: list[str]
    maps: list[AffineMaps]
    pipeline: bool
    model: str | None = None

    def check_against(self, model: nn.Module) -> None:
        """Refuse folders fitted on another kind of model than ``model``; move their maps to its device."""
        for maps in self.maps:
            Steering(self.spec, maps).check_against(model)


def load_stack(folders: Sequence[str], model: str | None = None) -> Stack:
    """Read the maps ``folders``; refuses folders fitted on different base models (or model types)."""
    if not folders:
        raise ConfigError("no maps folders given: maps=DIR or maps=[DIR1,DIR2]")
    steerings = [load_steering(str(f), model) for f in folders]
    for key in ("base_model", "model_type"):
        named = {str(f): s.maps.info.get(key) for f, s in zip(folders, steerings) if s.maps.info.get(key)}
        if len(set(named.values())) > 1:
            listing = ", ".join(f"{f} on {v}" for f, v in named.items())
            raise ConfigError(
                f"maps folders fitted on different {key.replace('_', ' ')}s ({listing}): give folders "
                "fitted on one base model"
            )
    first = steerings[0]
    return Stack(first.spec, [str(f) for f in folders], [s.maps for s in steerings], first.pipeline, model)


def check_strengths(stack: Stack, strengths: Sequence[float]) -> list[float]:
    """One strength per folder, as floats."""
    if len(strengths) != len(stack.maps):
        raise ConfigError(f"{len(strengths)} strengths for {len(stack.maps)} maps folders: give one per folder")
    return [float(s) for s in strengths]


@contextmanager
def stacked(model: Any, stack: Stack, strengths: Sequence[float]) -> Iterator[Any]:
    """Inside the block every folder's maps steer ``model`` (a module, or a pipeline's modules), each at its
    strength, attached in the folders' order."""
    with ExitStack() as hooks:
        for maps, lam in zip(stack.maps, check_strengths(stack, strengths)):
            hooks.enter_context(maps.apply(model, strength=lam))
        yield model


def folded(stack: Stack, strengths: Sequence[float]) -> tuple[AffineMaps, float]:
    """What :func:`export` merges for ``stack`` at ``strengths``: one folder's maps at its strength; for
    several, one set of maps holding each folder's sites at its strength (merged at strength 1). Folders at
    strength 0 (the identity) are left out.

    Folders whose sites overlap are refused: maps that follow one another on one site do not fold one by one.
    """
    lams = check_strengths(stack, strengths)
    parts = [(f, m, lam) for f, m, lam in zip(stack.folders, stack.maps, lams) if lam != 0.0]
    if len(parts) <= 1:
        _, maps, lam = parts[0] if parts else (None, stack.maps[0], 0.0)
        return maps, check_strength(lam)
    owner: dict[str, str] = {}
    for folder, maps, _ in parts:
        for site in map(str, maps.sites):
            if site in owner:
                raise ConfigError(
                    f"{owner[site]} and {folder} both map site {site}: export them one folder at a time "
                    "(or with one of them at strength 0), or use them together live only"
                )
            owner[site] = folder
    info = {k: v for k, v in stack.maps[0].info.items() if k in ("base_model", "model_type")}
    info["stacked"] = [{"maps": f, "strength": lam} for f, lam in zip(stack.folders, lams)]
    out = AffineMaps([s for _, m, _ in parts for s in m.sites], [d for _, m, _ in parts for d in m.dims], info=info)
    coefficients = [m.coefficients(i, check_strength(lam)) for _, m, lam in parts for i in range(len(m.sites))]
    with torch.no_grad():
        for omega, beta, (w, b) in zip(out.omega, out.beta, coefficients):
            omega.copy_(w)
            beta.copy_(b)
    return out, 1.0


def export_stack(
    stack: Stack, strengths: Sequence[float], output_dir: str | Path, overwrite: bool = False, gguf: bool = False
) -> Path:
    """Write ``output_dir/merged`` (the merged checkpoint at ``strengths``) and, with ``gguf``,
    ``output_dir/gguf/model.gguf``; atomically, and an existing ``output_dir`` only with ``overwrite``."""
    maps, lam = folded(stack, strengths)
    with atomic_dir(output_dir, overwrite=overwrite) as tmp:
        export(maps, tmp / MERGED, strength=lam, model=stack.model)
        if gguf:
            export_gguf(maps, tmp / GGUF, strength=lam, model=stack.model)
    return Path(output_dir)


def export_commands(
    stack: Stack, strengths: Sequence[float], output_dir: str | Path, overwrite: bool, gguf: bool
) -> list[str]:
    """The command lines that write what :func:`export_stack` writes."""
    lams = check_strengths(stack, strengths)
    out = Path(output_dir)
    if len(stack.folders) > 1:
        call = (
            "from lineas.tasks.stacked import export_stack, load_stack; "
            f"export_stack(load_stack({stack.folders!r}, {stack.model!r}), {lams!r}, {str(out)!r}, "
            f"overwrite={overwrite}, gguf={gguf})"
        )
        return [f"python -c {shlex.quote(call)}"]
    common = [f"maps={stack.folders[0]}", f"strength={lams[0]:g}"]
    common += [f"model={stack.model}"] if stack.model else []
    common += ["overwrite=true"] if overwrite else []
    lines = [["python", "-m", "lineas.export", *common, f"output_dir={out / MERGED}"]]
    lines += [["python", "-m", "lineas.export", *common, "format=gguf", f"output_dir={out / GGUF}"]] if gguf else []
    return [shlex.join(line) for line in lines]
