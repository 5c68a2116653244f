"""The text-to-image backbone (``DiffusionPipe``) on tiny random diffusers pipelines (a UNet one and a FLUX
one), offline: fitting through it, and a pipeline's modules (``PipelineModules``) under the merge."""

from __future__ import annotations

import json

import pytest
import torch

import lineas
from lineas import MergeError
from lineas.core.files import data_path
from lineas.core.merge import merge_
from lineas.models.diffusion import PipelineModules
from lineas.models.families import PRESETS
from tests.helpers import random_maps_for

CLIP = PRESETS["stable_diffusion"]["text"]
# Fitting: the denoiser preset plus the text encoder(s); FLUX on whole blocks (:0 text, :1 image stream).
FIT_SITES = {
    "sd": PRESETS["stable_diffusion"]["norms"] + CLIP,
    "flux": PRESETS["flux"]["blocks"] + CLIP + [r"text_encoder_2\.encoder\.block\.\d+\.layer\.1\.DenseReluDense\.wo"],
}


def test_fitting_cuts_heldout_w2_at_every_site(tiny_pipe, tmp_path):
    family = tiny_pipe.spec.removeprefix("tiny:")
    lineas.fit(
        tiny_pipe,
        data_path("t2i/plain.txt"),
        data_path("t2i/anime.txt"),
        sites=FIT_SITES[family],
        steps=60,
        lr=3e-2,
        batch_size=16,
        num_fit=32,
        output_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    summary = json.loads((tmp_path / "fit_summary.json").read_text())["heldout_w2"]
    w2 = summary["sites"]
    kinds = {s.split(".")[0] for s in w2}
    assert kinds == ({"unet", "text_encoder"} if family == "sd" else {"transformer", "text_encoder", "text_encoder_2"})
    if family == "flux":
        assert {s[-2:] for s in w2 if s.startswith("transformer")} == {":0", ":1"}
    for site, v in w2.items():
        assert v["before"] > 0, f"{site}: the prompts do not reach this site"
        assert v["after"] < v["before"], (site, v)
    assert summary["mean"]["after"] < 0.5 * summary["mean"]["before"], summary["mean"]


def test_residual_stream_sites_refuse_to_merge(tiny_pipe):
    family = tiny_pipe.spec.removeprefix("tiny:")
    sites = PRESETS["flux"]["blocks"] if family == "flux" else [r"unet\.mid_block"]
    maps = random_maps_for(tiny_pipe, sites)
    with pytest.raises(MergeError, match="cannot be merged.*residual stream"):
        merge_(PipelineModules(tiny_pipe.pipe), maps, lineas.fold_rules(PipelineModules(tiny_pipe.pipe)))


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_the_fitting_forward_follows_the_pipelines_own_sampler(family):
    # Reference: the pipeline's own __call__ from the same initial latents, no guidance; the denoiser's
    # output at step k of it is the fitting forward's output with fit_steps=k.
    prompts = ["a red circle", "a photo of a cat"]
    backbones = [lineas.DiffusionPipe(f"tiny:{family}", guidance_scale=1.0, fit_steps=k) for k in (1, 2)]
    pipe = backbones[0].pipe
    denoiser = pipe.unet if family == "sd" else pipe.transformer
    outputs = []
    handle = denoiser.register_forward_hook(lambda m, a, out: outputs.append(out[0]))
    with torch.no_grad():
        fitted = [b.forward(b.collate(prompts)) for b in backbones]
        outputs.clear()
        h, w = backbones[0].size()
        f = pipe.vae_scale_factor
        if family == "sd":
            noise = backbones[0].noise(
                len(prompts), (denoiser.config.in_channels, h // f, w // f), "cpu", torch.float32
            )
        else:
            c, lh, lw = denoiser.config.in_channels // 4, 2 * (h // (f * 2)), 2 * (w // (f * 2))
            noise = pipe._pack_latents(backbones[0].noise(1, (c, lh, lw), "cpu", torch.float32), 1, c, lh, lw)
            noise = noise.expand(len(prompts), -1, -1)
        pipe(prompts, latents=noise, output_type="latent", **backbones[0].call_kwargs)
    handle.remove()
    assert len(outputs) == 2
    for k, out in enumerate(fitted):
        torch.testing.assert_close(out, outputs[k], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)  # the two steps differ: the test can fail


def test_fit_steps_out_of_range_and_closed_form_estimators_are_refused(tmp_path):
    with pytest.raises(lineas.ConfigError, match="fit_steps=3: choose 1 to num_inference_steps \\(2\\)"):
        lineas.DiffusionPipe("tiny:sd", fit_steps=3)
    with pytest.raises(lineas.ConfigError, match="estimator=linear_act .* set backbone.fit_steps=1"):
        lineas.LinEASModule(lineas.DiffusionPipe("tiny:sd", fit_steps=2), sites="norms", estimator="linear_act")


def test_a_stochastic_sampler_gives_every_fitting_forward_the_same_noise():
    from diffusers import EulerAncestralDiscreteScheduler

    backbone = lineas.DiffusionPipe("tiny:sd", fit_steps=2)
    backbone.pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(backbone.pipe.scheduler.config)
    batch = backbone.collate(["a red circle", "a photo of a cat"])
    with torch.no_grad():
        first, again = backbone.forward(batch), backbone.forward(batch)
        torch.manual_seed(123)  # the global generator plays no part
        third = backbone.forward(batch)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(first, third, rtol=0, atol=0)
