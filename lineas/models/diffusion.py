"""Diffusers text-to-image pipelines as backbones (Stable Diffusion, SDXL, FLUX).

The fitting forward is the start of the pipeline's own sampling: the prompts go through the
pipeline's ``encode_prompt`` (so text-encoder sites fire), then the denoiser runs on fixed-seed
initial latents (the same noise for every prompt, so activations depend on the prompt alone) for the
first ``fit_steps`` steps of the pipeline's scheduler, each step's latents coming from the previous
step's output with the maps active, gradients flowing through all of them. ``fit_steps=1`` (default)
is the paper's setting, the first denoising step. Classifier-free guidance is off in this forward:
only the conditional half would count, so only it is computed, and with ``fit_steps > 1`` the
trajectory is the conditional one. Generation (:mod:`lineas.tasks.images`) runs the whole pipeline
with the maps attached to every step.

Site outputs: 4-D UNet feature maps pool over space; token sequences (UNet attention norms, FLUX
streams, text encoders) pool over all their positions. ``position_mask`` is None: the denoiser
attends to every position of the padded prompt embeddings (CLIP pads to its full length, T5 to
``max_sequence_length``), so each one is a real input to it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from lineas.core.errors import ConfigError, ModelSourceError
from lineas.models.backbone import parse_dtype
from lineas.models.families import FAMILIES
from lineas.models.sources import canonical_spec, resolve

PIPELINE_FAMILIES = {f.pipeline_class: t for t, f in FAMILIES.items() if f.pipeline_class}  # class -> family
COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "transformer")


def is_pipeline(spec: str, model_type: str | None = None) -> bool:
    """True for maps fitted on a pipeline family (``model_type``), or a spec that resolves to a diffusers folder."""
    return model_type in PIPELINE_FAMILIES.values() or resolve(spec).is_pipeline


def family_of(pipe: Any) -> str:
    """The lineas family name of a pipeline (the ``model_type`` its maps and presets are keyed by)."""
    name = type(pipe).__name__
    if name not in PIPELINE_FAMILIES:
        raise ModelSourceError(f"{name} is not supported; lineas steers {', '.join(PIPELINE_FAMILIES)}")
    return PIPELINE_FAMILIES[name]


def load_pipeline(spec: str, dtype: str | torch.dtype = "float32") -> Any:
    """``DiffusionPipeline.from_pretrained`` of a spec (hub id, folder, ``tiny:sd``, ``tiny:flux``)."""
    from diffusers import DiffusionPipeline

    source = resolve(spec)
    if Path(source.path).is_dir() and not source.is_pipeline:
        raise ModelSourceError(
            f"{spec} is not a diffusers pipeline (no model_index.json): fit a causal LM with backbone=causal_lm "
            "(e.g. recipe=tiny), or give a pipeline"
        )
    pipe = DiffusionPipeline.from_pretrained(source.path, dtype=parse_dtype(dtype))
    family_of(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class PipelineModules(nn.Module):
    """The pipeline's networks under their pipeline names, so that sites read ``unet.down_blocks.0...``,
    ``transformer.transformer_blocks.0``, ``text_encoder.text_model...``; ``config.model_type`` is the family."""

    def __init__(self, pipe: Any) -> None:
        super().__init__()
        for name in COMPONENTS:
            if getattr(pipe, name, None) is not None:
                self.add_module(name, getattr(pipe, name))
        self.config = SimpleNamespace(model_type=family_of(pipe))


class DiffusionPipe:
    """A frozen diffusers pipeline; the fitting forward is its first ``fit_steps`` denoising steps
    (module docstring), whose site outputs are concatenated along the features: each (step, feature)
    is a W2 dimension of its own.

    ``model`` is a hub id, a folder or ``tiny:sd`` / ``tiny:flux``. The call settings (``height``,
    ``width``, ``num_inference_steps``, ``guidance_scale``, ``max_sequence_length``; None: the
    folder's ``lineas_pipeline.json``, else the pipeline's own default) are those of generation too;
    ``seed`` draws the fitting latents.
    """

    def __init__(
        self,
        model: str,
        dtype: str | torch.dtype = "float32",
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        max_sequence_length: int | None = None,
        seed: int = 0,
        fit_steps: int = 1,
    ) -> None:
        self.spec = canonical_spec(model)
        self.pipe = load_pipeline(model, dtype)
        self.model = PipelineModules(self.pipe).requires_grad_(False).eval()
        self.family = self.model.config.model_type
        given = dict(
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            max_sequence_length=max_sequence_length,
        )
        self.call_kwargs = {**resolve(model).pipeline_settings, **{k: v for k, v in given.items() if v is not None}}
        if "max_sequence_length" not in FAMILIES[self.family].call_keys:
            self.call_kwargs.pop("max_sequence_length", None)
        self.seed = seed
        steps = self.call_kwargs.get("num_inference_steps", 1)
        if not 1 <= fit_steps <= steps:
            raise ConfigError(f"backbone.fit_steps={fit_steps}: choose 1 to num_inference_steps ({steps})")
        self.fit_steps = fit_steps

    def collate(self, prompts: list[str]) -> dict[str, Any]:
        return {"prompt": list(prompts)}

    def position_mask(self, batch: dict[str, Any]) -> None:
        return None

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return FAMILIES[self.family].denoise(self, batch["prompt"], device)

    def size(self) -> tuple[int, int]:
        pipe = self.pipe
        default = (getattr(pipe, "default_sample_size", None) or pipe.unet.config.sample_size) * pipe.vae_scale_factor
        return self.call_kwargs.get("height", default), self.call_kwargs.get("width", default)

    def noise(self, n: int, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn((1, *shape), generator=g).to(device, dtype).expand(n, *shape)

    def timesteps(self, device: torch.device, **kw: Any) -> torch.Tensor:
        # the scheduler as the pipeline sets it (which also resets a multistep solver's history): step
        # count, or FLUX's explicit sigmas and shift mu
        kw = kw or {"num_inference_steps": self.call_kwargs.get("num_inference_steps", 1)}
        self.pipe.scheduler.set_timesteps(device=device, **kw)
        return self.pipe.scheduler.timesteps

    def sample(self, latents: torch.Tensor, timesteps: torch.Tensor, denoise: Any) -> torch.Tensor:
        """The denoiser's output at the last of the first ``fit_steps`` sampler steps from ``latents``.

        A stochastic sampler (ancestral, SDE) draws its step noise from a generator seeded with ``seed``,
        so every fitting forward sees the same noise; that noise differs between the rows of a batch.
        """
        scheduler = self.pipe.scheduler
        seeded = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            seeded["generator"] = torch.Generator().manual_seed(self.seed)
        for k, t in enumerate(timesteps[: self.fit_steps]):
            out = denoise(latents, t)
            if k + 1 < self.fit_steps:
                latents = scheduler.step(out, t, latents, return_dict=False, **seeded)[0]
        return out
