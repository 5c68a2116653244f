"""Tiny random diffusers pipelines built from configs (``tiny:sd``, ``tiny:flux``), for tests and CI.

No hub: every component comes from a config with seeded random weights, and the tokenizers are
built in code, a word-level vocabulary over the words of the shipped prompt sets
(``lineas/data/t2i/*.txt``; other words map to ``<|unk|>``). Images are 32x32, latents 8x8.
Each pipeline is saved once with ``save_pretrained`` under :func:`lineas.models.cache.cache_dir`, so
``DiffusionPipeline.from_pretrained(folder)`` loads it with plain diffusers.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

import torch

from lineas.core.errors import ModelSourceError
from lineas.core.files import PIPELINE_SETTINGS, write_json
from lineas.models.cache import cached

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
MAX_TOKENS = 24  # the longest shipped prompt has 16 words and punctuation
WIDTH = 32  # hidden size of every tiny component


def tokenizer_words() -> list[str]:
    """Sorted lowercase words and punctuation of the shipped text-to-image prompt sets."""
    words: set[str] = set()
    for f in (files("lineas") / "data" / "t2i").iterdir():
        if f.name.endswith(".txt"):
            words.update(re.findall(r"\w+|[^\w\s]", f.read_text(encoding="utf-8").lower()))
    return sorted(words)


def word_level_tokenizer(words: list[str], max_tokens: int) -> Any:
    """A word-level fast tokenizer over ``words``: ``<|startoftext|> words <|endoftext|>``, lowercased, split on
    whitespace and punctuation, padded with ``<|endoftext|>``; other words map to ``<|unk|>``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([BOS, EOS, UNK, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, 0), (EOS, 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=EOS, model_max_length=max_tokens
    )


def tiny_tokenizer() -> Any:
    """The word-level tokenizer of the tiny pipelines, over the words of the shipped t2i prompt sets."""
    return word_level_tokenizer(tokenizer_words(), MAX_TOKENS)


def clip_text_encoder(vocab_size: int, width: int = WIDTH, layers: int = 2, max_tokens: int = MAX_TOKENS) -> Any:
    """A small ``CLIPTextModel`` (4 heads, MLP twice the width; random weights), ids 0 / 1 for BOS / EOS-pad."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=max_tokens,
            projection_dim=width,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )


def autoencoder(latent_channels: int, channels: tuple[int, ...] = (8, 16, 16), groups: int = 4, **kw: Any) -> Any:
    """An ``AutoencoderKL`` for 32x32 images with ``len(channels) - 1`` downsamplings (random weights)."""
    from diffusers import AutoencoderKL

    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=list(channels),
        layers_per_block=1,
        norm_num_groups=groups,
        sample_size=32,
        **kw,
    )


def build_tiny_sd() -> Any:
    """A Stable Diffusion pipeline: a two-level UNet with cross-attention (16/32 channels), CLIP text encoder."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=WIDTH,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="trailing", steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=autoencoder(4),  # a scale factor of 4: 8x8 latents
        text_encoder=clip_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_flux() -> Any:
    """A FLUX.1-schnell-like pipeline: one double- and one single-stream block, CLIP + T5 text encoders."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=WIDTH,
        pooled_projection_dim=WIDTH,
        guidance_embeds=False,
        axes_dims_rope=[4, 6, 6],
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=WIDTH,
            d_ff=2 * WIDTH,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=1,
            eos_token_id=1,
        )
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=autoencoder(4, shift_factor=0.0, scaling_factor=1.0, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=clip_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tiny_tokenizer(),
        transformer=transformer,
    )


TINY_PIPELINES: dict[str, Callable[[], Any]] = {"sd": build_tiny_sd, "flux": build_tiny_flux}
# Call settings for fitting and generation (lineas_pipeline.json): SD with classifier-free
# guidance, FLUX like schnell (no guidance); both two steps.
CALL_SETTINGS = {
    "sd": {"height": 32, "width": 32, "num_inference_steps": 2, "guidance_scale": 5.0},
    "flux": {
        "height": 32,
        "width": 32,
        "num_inference_steps": 2,
        "guidance_scale": 0.0,
        "max_sequence_length": MAX_TOKENS,
    },
}


def tiny_pipeline_dir(family: str, seed: int = 0) -> Path:
    """The tiny random ``family`` pipeline (``sd`` or ``flux``), saved once as a diffusers folder."""
    if family not in TINY_PIPELINES:
        raise ModelSourceError(f"no tiny pipeline {family!r}; choose one of {sorted(TINY_PIPELINES)}")

    def build(tmp: Path) -> None:
        torch.manual_seed(seed)
        TINY_PIPELINES[family]().save_pretrained(tmp)
        write_json(tmp / PIPELINE_SETTINGS, CALL_SETTINGS[family])

    return cached(f"tiny-pipeline-{family}-seed{seed}", build, marker="model_index.json")
