"""``python -m lineas.export maps=DIR strength=1.0 output_dir=OUT [overwrite=true] [model=ID] [dtype=bfloat16]``.

Writes a merged, plain checkpoint (:func:`lineas.tasks.export.export`): a transformers folder, or a whole
diffusers pipeline folder, that loads with no lineas import. Settings: :class:`lineas.tasks.configs.ExportConfig`.
"""

from lineas.cli.main import hydra_entry
from lineas.tasks.configs import ExportConfig
from lineas.tasks.export import export

__all__ = ["export"]


def run(cfg: ExportConfig) -> None:
    out = export(
        cfg.maps, cfg.output_dir, strength=cfg.strength, model=cfg.model, overwrite=cfg.overwrite, dtype=cfg.dtype
    )
    print(f"merged checkpoint: {out}")


main = hydra_entry("export", run)

if __name__ == "__main__":
    main()
