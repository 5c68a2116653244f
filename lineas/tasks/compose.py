"""Maps folders composed into one (``python -m lineas.compose``): the first folder's maps apply first, then the
second's, each at its own strength (:func:`lineas.core.compose.compose_maps`).

The composed folder is an ordinary maps folder at strength 1: it applies live, merges into one checkpoint and
one GGUF. Its ``lineas.json`` records its parts (``composed_of``: path, strength and info of each). Its own
strength slider scales the composite map, ``z + lam*(T(z) - z)``, not each part's strength.
Refused: parts fitted on different base models, clipped maps, gated folders (a gate depends on the input, so a
gated map is not affine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lineas.core.compose import compose_maps
from lineas.core.errors import ConfigError, MapsFileError, OutputExistsError
from lineas.core.files import GATE_FILES
from lineas.core.maps import AffineMaps, load_maps


def compose(
    maps: Sequence[str | Path | AffineMaps],
    strengths: Sequence[float] | None = None,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
) -> AffineMaps:
    """``maps[0]`` at ``strengths[0]``, then ``maps[1]`` at ``strengths[1]``, ... as one map at strength 1
    (strengths default to 1 each); saved to ``output_dir`` if given. Returns the composed maps."""
    if isinstance(maps, (str, Path, AffineMaps)):
        raise ConfigError("compose takes a list of maps folders: maps=[A,B]")
    if output_dir is not None and Path(output_dir).exists() and not overwrite:
        raise OutputExistsError(f"{output_dir} exists; pass overwrite=true to replace it")
    parts = [_read(m) for m in maps]
    strengths = [1.0] * len(parts) if strengths is None else [float(s) for s in strengths]
    composed = compose_maps(parts, strengths, info=_info(maps, parts, strengths))
    if output_dir is not None:
        composed.save(output_dir, overwrite=overwrite)
    return composed


def _read(maps: str | Path | AffineMaps) -> AffineMaps:
    if isinstance(maps, AffineMaps):
        return maps
    gates = [name for name in GATE_FILES if (Path(maps) / name).exists()]
    if gates:
        raise MapsFileError(
            f"{maps} holds a gate ({', '.join(gates)}): a gated map depends on the input, so it does not compose "
            "into one affine map; compose a copy of the folder without the gate"
        )
    return load_maps(maps)


def _info(maps: Sequence[Any], parts: list[AffineMaps], strengths: list[float]) -> dict[str, Any]:
    """The composed folder's info: the common base model and model type, and each part."""
    for key in ("base_model", "model_type"):
        values = {p.info.get(key) for p in parts} - {None}
        if len(values) > 1:
            named = ", ".join(f"{_name(m)}: {p.info.get(key)}" for m, p in zip(maps, parts))
            raise MapsFileError(f"the maps were fitted on different base models ({named}): compose maps of one model")
    return {
        "base_model": next((p.info["base_model"] for p in parts if p.info.get("base_model")), None),
        "model_type": next((p.info["model_type"] for p in parts if p.info.get("model_type")), None),
        "estimator": "composed",
        "shift": any(p.info.get("shift", True) for p in parts),
        "composed_of": [
            {"path": _name(m), "strength": lam, "info": p.info} for m, p, lam in zip(maps, parts, strengths)
        ],
    }


def _name(maps: str | Path | AffineMaps) -> str:
    return "(maps given in memory)" if isinstance(maps, AffineMaps) else str(Path(maps).resolve())
