"""Images of a steered pipeline (``render``): strength 0 is the base pipeline, the maps change the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineas.tasks.images import render, render_rows
from lineas.tasks.shapes import SEED_STRIDE, generate, image_seed
from tests.helpers import T2I_MERGE_SITES, T2I_PROMPTS, T2I_SEEDS, random_maps_for


def test_strength_zero_reproduces_the_base_images(tiny_pipe):
    maps = random_maps_for(tiny_pipe, T2I_MERGE_SITES[tiny_pipe.spec.removeprefix("tiny:")])
    base = render(tiny_pipe.pipe, T2I_PROMPTS, T2I_SEEDS, **tiny_pipe.call_kwargs)[0]
    steered = render(tiny_pipe.pipe, T2I_PROMPTS, T2I_SEEDS, maps, strengths=(0.0, 1.0), **tiny_pipe.call_kwargs)
    assert np.array_equal(steered[0], base)
    assert np.abs(steered[1] - base).max() > 0.05  # the maps do change the images
    assert not any(m._forward_hooks for m in tiny_pipe.model.modules())


def test_the_shapes_evaluation_gives_every_image_its_own_noise(tiny_pipe):
    """Rates over a few seeds must not rest on a few noise draws: the same prompt twice at one seed gives two
    images, and each image is a function of its prompt, its index and the seed alone (not of the batching)."""
    prompts = [T2I_PROMPTS[0], T2I_PROMPTS[0], T2I_PROMPTS[1]]
    images = generate(tiny_pipe.pipe, prompts, [5, 6], **tiny_pipe.call_kwargs)[0]  # rows: (0,5) (0,6) (1,5) ...
    assert (images[0] - images[2]).abs().max() > 0.05  # same prompt, same seed, other index: other noise
    # (up to float rounding: a batch of one takes other kernels)
    one_by_one = generate(tiny_pipe.pipe, prompts, [5, 6], chunk=1, **tiny_pipe.call_kwargs)[0]
    torch.testing.assert_close(images, one_by_one, rtol=0, atol=1e-5)
    alone = render_rows(tiny_pipe.pipe, [(prompts[2], image_seed(6, 2))], **tiny_pipe.call_kwargs)[0, 0]
    torch.testing.assert_close(images[5], torch.from_numpy(alone).permute(2, 0, 1).float(), rtol=0, atol=1e-5)


def test_image_seeds_of_two_seeds_never_collide():
    seeds = {image_seed(s, i) for s in (0, 1, 2) for i in (0, 1, SEED_STRIDE - 1)}
    assert len(seeds) == 9
    with pytest.raises(ValueError, match="prompt index"):
        image_seed(1, SEED_STRIDE)
