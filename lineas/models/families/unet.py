"""Stable Diffusion 1.x/2.x and SDXL (diffusers pipelines; sites are named as in
:class:`lineas.models.diffusion.PipelineModules`): UNet norms and the CLIP text encoders' MLP outputs."""

from typing import Any

import torch

from lineas.models.family import Family

NORMS = [r"unet\..*\.resnets\.\d+\.norm[12]", r"unet\..*\.transformer_blocks\.\d+\.norm[123]"]
UNET = {
    "norms": NORMS,
    "resnet_norms": NORMS[:1],  # GroupNorm, 4-D: pooled over space
    "attn_norms": NORMS[1:],  # LayerNorm over spatial tokens
}
CLIP_MLP_OUT = r"text_encoder\.(text_model\.)?encoder\.layers\.\d+\.mlp\.fc2"
# SD 1.x/2.x: the fitting forward has one timestep and fixed noise, and the prompt enters only by
# cross-attention, so the first resnet and the norms ahead of the first cross-attention see no prompt
# (their W2 is 0: a map there cannot steer). SDXL feeds the pooled prompt into the time embedding.
PROMPT_FREE = r"(?!unet\.down_blocks\.0\.(resnets\.0\.|attentions\.0\.transformer_blocks\.0\.norm[12]$))"


def unet_denoise(backbone: Any, prompts: list[str], device: torch.device) -> torch.Tensor:
    """The UNet's output for ``prompts`` at the first fitting steps of ``backbone``
    (:class:`lineas.models.diffusion.DiffusionPipe`); SDXL adds the pooled prompt and the size ids."""
    pipe, n = backbone.pipe, len(prompts)
    (height, width), unet = backbone.size(), pipe.unet
    timesteps = backbone.timesteps(device)
    f = pipe.vae_scale_factor
    latents = backbone.noise(n, (unet.config.in_channels, height // f, width // f), device, unet.dtype)
    if backbone.family == "stable_diffusion_xl":
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=device, do_classifier_free_guidance=False)
        time_ids = pipe._get_add_time_ids(
            (height, width),
            (0, 0),
            (height, width),
            dtype=embeds.dtype,
            text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
        )
        extra = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids.to(device).expand(n, -1)}}
    else:
        embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
        extra = {}

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = pipe.scheduler.scale_model_input(x, t)
        return unet(x, t, encoder_hidden_states=embeds, **extra).sample

    return backbone.sample(latents * pipe.scheduler.init_noise_sigma, timesteps, denoise)


STABLE_DIFFUSION = Family(
    "stable_diffusion",
    presets={**{name: [PROMPT_FREE + p for p in patterns] for name, patterns in UNET.items()}, "text": [CLIP_MLP_OUT]},
    default_preset="norms",
    pipeline_class="StableDiffusionPipeline",
    denoise=unet_denoise,
)
STABLE_DIFFUSION_XL = Family(
    "stable_diffusion_xl",
    presets={**UNET, "text": [CLIP_MLP_OUT, CLIP_MLP_OUT.replace("text_encoder", "text_encoder_2", 1)]},
    default_preset="norms",
    pipeline_class="StableDiffusionXLPipeline",
    denoise=unet_denoise,
)
