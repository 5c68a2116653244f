"""The text-to-image backbone (``DiffusionPipe``) on tiny random diffusers pipelines (a UNet one and a FLUX
one), offline: fitting through it, and a pipeline's modules (``PipelineModules``) under the merge."""

from __future__ import annotations

import json

import pytest

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
