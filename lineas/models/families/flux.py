"""FLUX (diffusers ``FluxPipeline``): the double- and single-stream transformer blocks, CLIP text encoder."""

from typing import Any

import torch

from lineas.models.families.unet import CLIP_MLP_OUT
from lineas.models.family import Family


def flux_denoise(backbone: Any, prompts: list[str], device: torch.device) -> torch.Tensor:
    """The transformer's output for ``prompts`` at the first fitting steps of ``backbone``
    (:class:`lineas.models.diffusion.DiffusionPipe`): packed latents, FLUX's sigmas and shift."""
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    pipe, n = backbone.pipe, len(prompts)
    (height, width), tr = backbone.size(), pipe.transformer
    embeds, pooled, text_ids = pipe.encode_prompt(
        prompts, prompt_2=None, device=device, max_sequence_length=backbone.call_kwargs.get("max_sequence_length", 512)
    )
    c, h, w = (
        tr.config.in_channels // 4,
        2 * (height // (pipe.vae_scale_factor * 2)),
        2 * (width // (pipe.vae_scale_factor * 2)),
    )
    latents = pipe._pack_latents(backbone.noise(1, (c, h, w), device, tr.dtype), 1, c, h, w).expand(n, -1, -1)
    image_ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, device, tr.dtype)
    steps = backbone.call_kwargs.get("num_inference_steps", 1)
    cfg = pipe.scheduler.config
    mu = calculate_shift(
        latents.shape[1],
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )
    timesteps = backbone.timesteps(device, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    guidance = None
    if tr.config.guidance_embeds:
        guidance = torch.full((n,), backbone.call_kwargs.get("guidance_scale", 3.5), device=device, dtype=torch.float32)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return tr(
            hidden_states=x,
            timestep=(t / 1000).expand(n).to(tr.dtype),
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
        ).sample

    return backbone.sample(latents, timesteps, denoise)


FLUX = Family(
    "flux",
    presets={
        # to_out.0: image stream, to_add_out: text stream, single blocks' proj_out: both, concatenated
        "attn_out": [
            r"transformer\.transformer_blocks\.\d+\.attn\.(to_out\.0|to_add_out)",
            r"transformer\.single_transformer_blocks\.\d+\.proj_out",
        ],
        "ff_out": [r"transformer\.transformer_blocks\.\d+\.(ff|ff_context)\.net\.2"],
        # live only: whole blocks, :0 text stream, :1 image stream (the residual stream; no weight produces it)
        "blocks": [
            r"transformer\.(single_)?transformer_blocks\.\d+:0",
            r"transformer\.(single_)?transformer_blocks\.\d+:1",
        ],
        "text": [CLIP_MLP_OUT],
    },
    default_preset="attn_out",
    pipeline_class="FluxPipeline",
    denoise=flux_denoise,
    call_keys=("max_sequence_length",),
)
