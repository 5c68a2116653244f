"""The evaluation harness gives every image its own noise, so that rates over a few seeds rest on every image."""

from __future__ import annotations

import pytest
import torch

from experiments.shapes_world.evaluate import SEED_STRIDE, generate, image_seed
from lineas.tasks.images import render_rows
from tests.helpers import T2I_PROMPTS


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
