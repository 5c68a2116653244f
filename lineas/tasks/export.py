"""A merged, plain checkpoint: the maps folded into their base model's weights at one strength.

For a causal LM the written folder (safetensors weights, config, tokenizer, generation config) loads
with ``AutoModelForCausalLM.from_pretrained(OUT)``; for a diffusers pipeline (maps fitted with
:class:`lineas.models.diffusion.DiffusionPipe`) it is a whole pipeline folder that loads with
``DiffusionPipeline.from_pretrained(OUT)``. No lineas import, no hooks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from lineas.core.errors import MergeError
from lineas.core.files import MERGE_RECORD, PIPELINE_SETTINGS
from lineas.core.maps import AffineMaps, check_strength, load_maps
from lineas.core.merge import check_unclipped, merge_
from lineas.core.outputs import Output
from lineas.models.backbone import parse_dtype
from lineas.models.causal_lm import load_causal_lm, quiet_progress
from lineas.models.diffusion import PipelineModules, is_pipeline, load_pipeline
from lineas.models.families import check_fitted_on, fold_rules
from lineas.models.sources import resolve


def export(
    maps: str | Path | AffineMaps,
    output_dir: str | Path,
    strength: float = 1.0,
    model: str | None = None,
    overwrite: bool = False,
    dtype: str | None = None,
    ungated: bool = False,
) -> Path:
    """Fold ``maps`` at ``strength`` into their base model (or ``model``) and save it to ``output_dir``.

    A maps folder with a per-token gate is refused unless ``ungated`` (its maps are then exported without it)."""
    output_dir, strength = Path(output_dir), check_strength(strength)
    with export_output(output_dir, maps, overwrite) as out:
        maps, spec = mergeable(maps, model, ungated)
        base, weights, save = _load_base(spec, is_pipeline(spec, maps.info.get("model_type")))
        check_fitted_on(maps.info, base, spec)
        plan = merge_(base, maps, fold_rules(base), strength)
        if dtype is not None:
            weights.to(parse_dtype(dtype))
        with out.writing() as tmp:
            save(tmp)
            # the base may itself be merged: its record, and so on
            write_merge_record(
                tmp, spec, strength, maps, bias_flags_enabled=plan.flags, base_merge=resolve(spec).merge_record
            )
    return output_dir


def write_merge_record(folder: Path, spec: str, strength: float, maps: AffineMaps, **details: Any) -> None:
    """``lineas_merge.json`` of an export: the base model, strength, sites and maps' info, and ``details``."""
    record = {"base_model": spec, "strength": strength, **details, "sites": [str(s) for s in maps.sites]}
    (folder / MERGE_RECORD).write_text(json.dumps({**record, "maps_info": maps.info}, indent=2) + "\n")


def export_output(output_dir: Path, maps: str | Path | AffineMaps, overwrite: bool) -> Output:
    """The claim on an export's ``output_dir``: it may not overlap the maps it reads."""
    reads = [] if isinstance(maps, AffineMaps) else [maps]
    return Output(output_dir, "export", overwrite=overwrite, reads=reads)


def mergeable(maps: str | Path | AffineMaps, model: str | None, ungated: bool = False) -> tuple[AffineMaps, str]:
    """The maps (read without their gate if ``ungated``; refused if clipped or gated) and their base model's spec."""
    maps = maps if isinstance(maps, AffineMaps) else load_maps(maps, gate=not ungated)
    check_unclipped(maps)
    spec = model or maps.info.get("base_model")
    if spec is None:
        raise MergeError("the maps do not name their base model: pass model=ID_OR_PATH")
    return maps, spec


def _load_base(spec: str, pipeline: bool) -> tuple[Any, Any, Callable[[Path], None]]:
    """In float32: the module the maps fold into, what to cast, and how to save the whole folder."""
    if pipeline:
        pipe = load_pipeline(spec, torch.float32)
        settings = Path(resolve(spec).path) / PIPELINE_SETTINGS

        def save_pipeline(tmp: Path) -> None:
            pipe.save_pretrained(tmp)
            if settings.is_file():
                shutil.copyfile(settings, tmp / PIPELINE_SETTINGS)

        return PipelineModules(pipe), pipe, save_pipeline
    model, tokenizer = load_causal_lm(spec, torch.float32)

    def save_lm(tmp: Path) -> None:
        with quiet_progress():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return model, model, save_lm
