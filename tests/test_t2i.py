"""Text-to-image: LinEAS on tiny random diffusers pipelines (a UNet one and a FLUX one), offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import lineas
from lineas.core.files import data_path
from lineas.tasks.export import export
from lineas.core.hooks import probe
from lineas.tasks.images import render
from lineas import MergeError
from lineas.core.merge import merge_
from lineas.models.diffusion import DiffusionPipe, PipelineModules
from lineas.models.families import PRESETS

PROMPTS = ["a cat sleeping on a windowsill", "a pink elephant in a kitchen"]
SEEDS = (0, 3)
CLIP = PRESETS["stable_diffusion"]["text"]
# Fitting: the denoiser preset plus the text encoder(s); FLUX on whole blocks (:0 text, :1 image stream).
FIT_SITES = {
    "sd": PRESETS["stable_diffusion"]["norms"] + CLIP,
    "flux": PRESETS["flux"]["blocks"] + CLIP + [r"text_encoder_2\.encoder\.block\.\d+\.layer\.1\.DenseReluDense\.wo"],
}
# Merging: every foldable kind (GroupNorm, LayerNorm, Conv2d, Linear), in the denoiser and the text encoder.
MERGE_SITES = {
    "sd": PRESETS["stable_diffusion"]["norms"] + CLIP + [r"unet\..*attentions\.\d+\.proj_out"],
    "flux": PRESETS["flux"]["attn_out"] + PRESETS["flux"]["ff_out"] + CLIP,
}
PIXEL_TOL = 1e-4  # images in [0, 1], float32 throughout: folding reorders a few float operations


@pytest.fixture(scope="module", params=["sd", "flux"])
def pipe(request) -> DiffusionPipe:
    return DiffusionPipe(f"tiny:{request.param}")


def random_maps(backbone: DiffusionPipe, sites: list[str], scale: float = 0.3) -> lineas.AffineMaps:
    resolved = lineas.resolve_sites(backbone.model, sites)
    dims, _ = probe(backbone.model, resolved, lambda: backbone.forward(backbone.collate(PROMPTS)))
    maps = lineas.AffineMaps(resolved, dims, info={"base_model": backbone.spec,
                                                    "model_type": backbone.model.config.model_type})
    with torch.no_grad():
        for w, b in zip(maps.omega, maps.beta):
            w.add_(scale * torch.randn_like(w))
            b.add_(scale * torch.randn_like(b))
    return maps


def test_fitting_cuts_heldout_w2_at_every_site(pipe, tmp_path):
    family = pipe.spec.removeprefix("tiny:")
    lineas.fit(pipe, data_path("t2i/plain.txt"), data_path("t2i/anime.txt"), sites=FIT_SITES[family], steps=60,
               lr=3e-2, batch_size=16, num_fit=32, output_dir=tmp_path, enable_progress_bar=False,
               enable_model_summary=False)
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


def test_strength_zero_reproduces_the_base_images(pipe):
    maps = random_maps(pipe, MERGE_SITES[pipe.spec.removeprefix("tiny:")])
    base = render(pipe.pipe, PROMPTS, SEEDS, **pipe.call_kwargs)[0]
    steered = render(pipe.pipe, PROMPTS, SEEDS, maps, strengths=(0.0, 1.0), **pipe.call_kwargs)
    assert np.array_equal(steered[0], base)
    assert np.abs(steered[1] - base).max() > 0.05  # the maps do change the images
    assert not any(m._forward_hooks for m in pipe.model.modules())


def test_residual_stream_sites_refuse_to_merge(pipe):
    family = pipe.spec.removeprefix("tiny:")
    sites = PRESETS["flux"]["blocks"] if family == "flux" else [r"unet\.mid_block"]
    maps = random_maps(pipe, sites)
    with pytest.raises(MergeError, match="cannot be merged.*residual stream"):
        merge_(PipelineModules(pipe.pipe), maps, lineas.fold_rules(PipelineModules(pipe.pipe)))


@pytest.mark.slow
def test_merged_pipeline_in_plain_diffusers_matches_live_maps(pipe, tmp_path):
    family = pipe.spec.removeprefix("tiny:")
    maps = random_maps(pipe, MERGE_SITES[family], scale=0.2)
    lam = 0.7
    live = render(pipe.pipe, PROMPTS, SEEDS, maps, strengths=(lam,), **pipe.call_kwargs)[0]
    base = render(pipe.pipe, PROMPTS, SEEDS, **pipe.call_kwargs)[0]
    export(maps, tmp_path / "merged", strength=lam)
    script = textwrap.dedent(f"""
        import sys, torch
        from diffusers import DiffusionPipeline
        from safetensors.numpy import save_file
        pipe = DiffusionPipeline.from_pretrained({str(tmp_path / 'merged')!r})
        prompts = [p for p in {PROMPTS!r} for _ in {SEEDS!r}]
        gens = [torch.Generator().manual_seed(s) for _ in {PROMPTS!r} for s in {SEEDS!r}]
        images = pipe(prompts, generator=gens, output_type="np", **{pipe.call_kwargs!r}).images
        assert not any(m.startswith("lineas") for m in sys.modules), "lineas was imported"
        save_file({{"images": images.copy(order="C")}}, {str(tmp_path / 'images.safetensors')!r})
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = load_file(tmp_path / "images.safetensors")["images"]
    diff, moved = np.abs(merged - live).max(), np.abs(live - base).max()
    print(f"\n{family}: max|merged - live| = {diff:.2e}, max|live - base| = {moved:.3f}")
    assert diff <= PIXEL_TOL
    assert moved > 0.02  # the comparison is not vacuous


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["tiny_sd", "tiny_flux"])
def test_tiny_recipe_trains_draws_a_grid_and_exports(recipe, tmp_path, monkeypatch):
    from PIL import Image

    from tests.helpers import run_cli

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models: one thread is far faster on a busy CPU
    (tmp_path / "prompts.txt").write_text("a cat sleeping on a windowsill\na pink elephant in a kitchen\n")
    out = tmp_path / "run"
    proc = run_cli("lineas.train", f"recipe={recipe}", f"output_dir={out}", "trainer.max_steps=20",
                   "callbacks.checkpoint=null", "trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lower at" in proc.stdout + proc.stderr
    assert Image.open(out / "grid.png").size == (3 * 34 + 2, 6 * 34 + 2)  # 3 strengths x (3 prompts x 2 seeds)
    assert (out / "merged" / "model_index.json").is_file()
    events = list((out / "tb").glob("events.*"))
    assert events and b"images" in events[0].read_bytes()
    proc = run_cli("lineas.generate", f"maps={out / 'maps'}", f"prompts={tmp_path / 'prompts.txt'}",
                   f"image_grid={tmp_path / 'g.png'}", "seeds=[0]", "strengths=[0,1]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(tmp_path / "g.png").size == (2 * 34 + 2, 2 * 34 + 2)
