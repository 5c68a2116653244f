"""``python -m lineas.export maps=DIR strength=1.0 output_dir=OUT [overwrite=true] [model=ID] [format=gguf]``.

Writes a merged, plain checkpoint (:func:`lineas.tasks.export.export`): a transformers folder, or a whole
diffusers pipeline folder, that loads with no lineas import; with ``format=gguf``, ``OUT/model.gguf`` for
llama.cpp (:func:`lineas.tasks.gguf.export_gguf`). Settings: :class:`lineas.tasks.configs.ExportConfig`.
"""

from lineas.cli.main import hydra_entry
from lineas.core.errors import ConfigError
from lineas.tasks.configs import ExportConfig
from lineas.tasks.export import export
from lineas.tasks.gguf import export_gguf

__all__ = ["export", "export_gguf"]


def run(cfg: ExportConfig) -> None:
    common = dict(strength=cfg.strength, model=cfg.model, overwrite=cfg.overwrite, ungated=cfg.ungated)
    if cfg.format == "gguf":
        out = export_gguf(cfg.maps, cfg.output_dir, tensor_type=cfg.tensor_type, **common)
        print(f"merged GGUF: {out / 'model.gguf'}")
    elif cfg.format == "transformers":
        print(f"merged checkpoint: {export(cfg.maps, cfg.output_dir, dtype=cfg.dtype, **common)}")
    else:
        raise ConfigError(f"format={cfg.format}: choose transformers or gguf")


main = hydra_entry("export", run)

if __name__ == "__main__":
    main()
