"""The shipped shapes-world pipeline (``offline:shapes-sd``): a plain diffusers folder the library resolves and
steers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lineas.models.diffusion import DiffusionPipe
from lineas.models.shapes_sd import SPEC, shapes_sd_dir
from lineas.models.sources import resolve


@pytest.mark.slow  # a fresh Python that imports diffusers
def test_the_spec_names_the_shipped_folder_and_plain_diffusers_loads_it():
    folder = shapes_sd_dir()
    assert resolve(SPEC).path == str(folder) and resolve(SPEC).is_pipeline
    assert resolve(SPEC).pipeline_settings["height"] == 32
    weights = sorted(folder.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder"}
    assert sum(p.stat().st_size for p in weights) < 12e6  # small: the committed size is in the README
    code = (
        "import sys, diffusers; p = diffusers.DiffusionPipeline.from_pretrained(sys.argv[1]); "
        "print(type(p).__name__, p.vae_scale_factor, p.unet.config.sample_size, len(p.tokenizer))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["StableDiffusionPipeline", "2", "16", "14"]


def test_the_backbone_reaches_every_prompt_dependent_norm():
    backbone = DiffusionPipe(SPEC)
    assert backbone.family == "stable_diffusion" and backbone.call_kwargs["num_inference_steps"] > 1
    out = backbone.forward(backbone.collate(["a red circle", "a blue square, striped"]))
    assert out.shape == (2, 4, 16, 16) and not torch.allclose(out[0], out[1])
