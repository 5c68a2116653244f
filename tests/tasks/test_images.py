"""Images of a steered pipeline (``render``): strength 0 is the base pipeline, the maps change the images."""

from __future__ import annotations

import numpy as np

from lineas.tasks.images import render
from tests.helpers import T2I_MERGE_SITES, T2I_PROMPTS, T2I_SEEDS, random_maps_for


def test_strength_zero_reproduces_the_base_images(tiny_pipe):
    maps = random_maps_for(tiny_pipe, T2I_MERGE_SITES[tiny_pipe.spec.removeprefix("tiny:")])
    base = render(tiny_pipe.pipe, T2I_PROMPTS, T2I_SEEDS, **tiny_pipe.call_kwargs)[0]
    steered = render(tiny_pipe.pipe, T2I_PROMPTS, T2I_SEEDS, maps, strengths=(0.0, 1.0), **tiny_pipe.call_kwargs)
    assert np.array_equal(steered[0], base)
    assert np.abs(steered[1] - base).max() > 0.05  # the maps do change the images
    assert not any(m._forward_hooks for m in tiny_pipe.model.modules())
