"""Stable Diffusion 1.x/2.x and SDXL (diffusers pipelines; sites are named as in
:class:`lineas.models.diffusion.PipelineModules`): UNet norms and the CLIP text encoders' MLP outputs."""

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

STABLE_DIFFUSION = Family(
    "stable_diffusion",
    presets={**{name: [PROMPT_FREE + p for p in patterns] for name, patterns in UNET.items()}, "text": [CLIP_MLP_OUT]},
    default_preset="norms",
)
STABLE_DIFFUSION_XL = Family(
    "stable_diffusion_xl",
    presets={**UNET, "text": [CLIP_MLP_OUT, CLIP_MLP_OUT.replace("text_encoder", "text_encoder_2", 1)]},
    default_preset="norms",
)
