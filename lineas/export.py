"""``python -m lineas.export maps=DIR strength=1.0 output_dir=OUT``: a merged, plain checkpoint.

For a causal LM the written folder (safetensors weights, config, tokenizer, generation config) loads
with ``AutoModelForCausalLM.from_pretrained(OUT)``; for a diffusers pipeline (maps fitted with
:class:`lineas.pipelines.DiffusionPipe`) it is a whole pipeline folder that loads with
``DiffusionPipeline.from_pretrained(OUT)``. No lineas import, no hooks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
import torch
from omegaconf import DictConfig

from lineas.atomic import atomic_dir
from lineas.backbones import _dtype
from lineas.maps import AffineMaps, MapsFileError, load_maps
from lineas.merge import MergeError, check_unclipped, merge_
from lineas.pipelines import CALL_DEFAULTS, PipelineModules, is_pipeline, load_pipeline
from lineas.zoo import resolve_model


def export(maps: str | Path | AffineMaps, output_dir: str | Path, strength: float = 1.0,
           model: str | None = None, overwrite: bool = False, dtype: str | None = None) -> Path:
    """Fold ``maps`` at ``strength`` into their base model (or ``model``) and save it to ``output_dir``."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass overwrite=true to replace it")
    maps = maps if isinstance(maps, AffineMaps) else load_maps(maps)
    check_unclipped(maps)  # before loading the base
    spec = model or maps.info.get("base_model")
    if spec is None:
        raise MergeError("the maps do not name their base model: pass model=ID_OR_PATH")
    base, weights, save = _load_base(spec, is_pipeline(spec, maps.info.get("model_type")))
    fitted_on = maps.info.get("model_type")
    if fitted_on and fitted_on != base.config.model_type:
        raise MergeError(f"the maps were fitted on a {fitted_on} model ({maps.info.get('base_model')}); "
                         f"{spec} is a {base.config.model_type} model")
    plan = merge_(base, maps, strength)
    if dtype is not None:
        weights.to(_dtype(dtype))
    with atomic_dir(output_dir, overwrite=overwrite) as tmp:
        save(tmp)
        record = {"base_model": spec, "strength": strength, "sites": [str(s) for s in maps.sites],
                  "bias_flags_enabled": plan.flags, "maps_info": maps.info}
        (tmp / "lineas_merge.json").write_text(json.dumps(record, indent=2) + "\n")
    return output_dir


def _load_base(spec: str, pipeline: bool) -> tuple[Any, Any, Callable[[Path], None]]:
    """In float32: the module the maps fold into, what to cast, and how to save the whole folder."""
    path = resolve_model(spec)
    if pipeline:
        pipe = load_pipeline(spec, torch.float32)

        def save_pipeline(tmp: Path) -> None:
            pipe.save_pretrained(tmp)
            if (Path(path) / CALL_DEFAULTS).is_file():
                (tmp / CALL_DEFAULTS).write_text((Path(path) / CALL_DEFAULTS).read_text())

        return PipelineModules(pipe), pipe, save_pipeline
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    def save_lm(tmp: Path) -> None:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(path).save_pretrained(tmp)

    return model, model, save_lm


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    try:
        out = export(cfg.maps, cfg.output_dir, strength=cfg.strength, model=cfg.model, overwrite=cfg.overwrite,
                     dtype=cfg.dtype)
    except (MergeError, MapsFileError, FileExistsError) as err:  # the user's to fix: one line, no traceback
        print(f"lineas.export: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"merged checkpoint: {out}")


if __name__ == "__main__":
    _main()
