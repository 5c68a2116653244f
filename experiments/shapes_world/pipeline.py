"""The components of the shapes-world Stable Diffusion pipeline (``offline:shapes-sd``), built in code.

A standard ``StableDiffusionPipeline`` at 32x32: an ``AutoencoderKL`` with one downsampling (16x16x4
latents), a ``UNet2DConditionModel`` with cross-attention at 16x16 and 8x8, a small ``CLIPTextModel``
and a word-level tokenizer over the caption vocabulary (:func:`experiments.shapes_world.world.vocabulary`).
The denoiser predicts ``v`` on a cosine noise schedule; sampling uses ``DPMSolverMultistepScheduler``
with classifier-free guidance (:data:`CALL_SETTINGS`). The weights are trained by
:mod:`experiments.shapes_world.train_pipeline` and shipped in ``lineas/data/shapes_sd/`` (a diffusers folder:
``DiffusionPipeline.from_pretrained`` loads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from experiments.shapes_world.world import SIZE, vocabulary
from lineas.models.tiny_pipelines import autoencoder, clip_text_encoder, word_level_tokenizer

MAX_TOKENS = 16  # the longest caption has 11 words and a comma, plus the two special tokens
NUM_TRAIN_TIMESTEPS = 1000
BETA_SCHEDULE = "squaredcos_cap_v2"
PREDICTION_TYPE = "v_prediction"
# Call settings for fitting and generation (written to lineas_pipeline.json). Guidance 2: of guidance 1 and 2 at
# 12 sampler steps and 3 at 25, it gives the fine-tuned weights the highest lowest per-attribute caption-following
# rate on the development captions, one noise per image (this folder's README). The model was trained with
# 10% empty captions.
CALL_SETTINGS = {"height": SIZE, "width": SIZE, "num_inference_steps": 12, "guidance_scale": 2.0}


@dataclass(frozen=True)
class ShapesSDConfig:
    """Sizes of the components (the defaults are those of the committed weights)."""

    vae_channels: tuple[int, ...] = (32, 64)  # one downsampling: 32x32 -> 16x16 latents
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)  # Stable Diffusion's layout: cross-attention at 16x16 and 8x8
    unet_down: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    unet_up: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    unet_layers: int = 1
    attention_heads: int = 4
    text_width: int = 64
    text_layers: int = 2


def shapes_tokenizer() -> Any:
    """The word-level tokenizer of the caption vocabulary (padded to :data:`MAX_TOKENS`)."""
    return word_level_tokenizer(vocabulary(), MAX_TOKENS)


def build_vae(cfg: ShapesSDConfig = ShapesSDConfig()) -> Any:
    """An ``AutoencoderKL`` with ``len(cfg.vae_channels) - 1`` downsamplings (random weights)."""
    return autoencoder(cfg.latent_channels, cfg.vae_channels, groups=8)


def build_text_encoder(vocab_size: int, cfg: ShapesSDConfig = ShapesSDConfig()) -> Any:
    """A small ``CLIPTextModel`` (random weights)."""
    return clip_text_encoder(vocab_size, cfg.text_width, cfg.text_layers, MAX_TOKENS)


def build_unet(cfg: ShapesSDConfig = ShapesSDConfig(), latent_size: int = SIZE // 2) -> Any:
    """A ``UNet2DConditionModel`` with cross-attention on the text encoder's width (random weights)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        layers_per_block=cfg.unet_layers,
        block_out_channels=cfg.unet_channels,
        down_block_types=cfg.unet_down,
        up_block_types=cfg.unet_up,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=cfg.attention_heads,  # diffusers' name for the number of heads here
        norm_num_groups=8,
    )


def train_scheduler() -> Any:
    """The DDPM noise schedule the denoiser is trained on."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE, prediction_type=PREDICTION_TYPE
    )


def sample_scheduler() -> Any:
    """The sampler shipped in the pipeline: DPM-Solver++ (2nd order) on the training schedule."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_schedule=BETA_SCHEDULE,
        prediction_type=PREDICTION_TYPE,
        timestep_spacing="trailing",
        steps_offset=1,
    )


def assemble(vae: Any, text_encoder: Any, unet: Any, tokenizer: Any | None = None) -> Any:
    """A ``StableDiffusionPipeline`` of these components, with the shipped sampler."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer if tokenizer is not None else shapes_tokenizer(),
        unet=unet,
        scheduler=sample_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
