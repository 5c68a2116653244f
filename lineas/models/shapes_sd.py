"""The shipped shapes-world Stable Diffusion pipeline, ``offline:shapes-sd``.

A plain diffusers folder in ``lineas/data/shapes_sd/`` (32x32 images, 16x16x4 latents, call settings in its
``lineas_pipeline.json``) that ``DiffusionPipeline.from_pretrained`` loads. How it was built and trained, and
how steering it is measured, is the shapes-world experiment (``experiments/shapes_world/``).
"""

from __future__ import annotations

from pathlib import Path

from lineas.core.errors import ModelSourceError
from lineas.core.files import data_path

SPEC = "offline:shapes-sd"


def shapes_sd_dir() -> Path:
    """The committed, trained pipeline folder (``lineas/data/shapes_sd``)."""
    path = Path(data_path("shapes_sd"))
    if not (path / "model_index.json").is_file():
        raise ModelSourceError(
            f"{SPEC}: no trained pipeline at {path}; train it with `python -m experiments.shapes_world.train_pipeline`"
        )
    return path
