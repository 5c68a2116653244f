"""The shapes world: seeded scenes, exact pixels, captions that say what is drawn, and its tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.shapes_world.pipeline import MAX_TOKENS, shapes_tokenizer
from experiments.shapes_world.world import (
    COLOURS,
    RGB,
    SHAPES,
    SIZE,
    STRIPE_SHADE,
    Layout,
    caption,
    parse_caption,
    sample_scenes,
    scenes_for_captions,
    vocabulary,
)


def test_same_seed_same_scenes_other_seed_other_scenes():
    a = sample_scenes(64, np.random.default_rng(3))
    b = sample_scenes(64, np.random.default_rng(3))
    c = sample_scenes(64, np.random.default_rng(4))
    assert a.captions == b.captions and torch.equal(a.render(), b.render())
    assert a.captions != c.captions
    # rendering in chunks changes nothing
    assert torch.equal(a.render(chunk=7), a.render())


def test_scene_statistics_follow_the_layout():
    scenes = sample_scenes(4000, np.random.default_rng(0), Layout(p_two=0.3, p_striped=0.8))
    assert abs((scenes.count == 2).mean() - 0.3) < 0.03
    assert abs(scenes.striped.mean() - 0.8) < 0.03
    assert set(np.unique(scenes.shape[:, 0])) == {0, 1, 2} and set(np.unique(scenes.colour[:, 0])) == {0, 1, 2, 3}
    two = scenes.count == 2
    kinds = scenes.shape * len(COLOURS) + scenes.colour
    assert (kinds[two, 0] != kinds[two, 1]).all()  # two objects never share both shape and colour


def test_objects_lie_inside_the_image_and_never_overlap():
    layout = Layout()
    scenes = sample_scenes(2000, np.random.default_rng(1), layout)
    present = scenes.shape >= 0
    lo = scenes.centre - scenes.size[..., None]
    hi = scenes.centre + scenes.size[..., None]
    assert (lo[present] >= layout.margin - 1e-4).all() and (hi[present] <= SIZE - layout.margin + 1e-4).all()
    two = scenes.count == 2
    apart = np.abs(scenes.centre[two, 0] - scenes.centre[two, 1]).max(-1) - scenes.size[two].sum(1)
    assert (apart >= layout.gap - 1e-4).all()
    single = scenes.size[~two, 0]
    assert single.min() >= layout.size_one[0] and single.max() <= layout.size_one[1]


def test_pixels_show_the_object_colour_area_and_stripes():
    scenes = scenes_for_captions(
        ["a red circle", "a blue square, striped", "a yellow triangle", "a green square"], np.random.default_rng(2)
    )
    images = scenes.render()
    assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == torch.float32
    for i, (colour, shape) in enumerate([(0, 0), (2, 1), (3, 2), (1, 1)]):
        pixels = images[i].flatten(1).T  # (H*W, 3)
        full = pixels[(pixels.max(1).values == 1.0)]
        assert torch.allclose(full, torch.from_numpy(RGB[colour]).expand_as(full))  # pure colour where covered
        s = float(scenes.size[i, 0])
        area = {0: np.pi * s * s, 1: 4 * s * s, 2: 2 * s * s}[shape]
        # anti-aliased coverage integrates to the geometric area (stripes darken, so not for the striped one)
        if i != 1:
            assert float(images[i].amax(0).sum()) == pytest.approx(area, rel=0.03)
    # striped: dark rows at STRIPE_SHADE inside the square, bright rows at 1, 3 and 3 per period of 6
    rows = images[1, 2].amax(1)
    inside = rows[rows > 0.2]
    levels = torch.isclose(inside, torch.tensor(1.0)) | torch.isclose(inside, torch.tensor(STRIPE_SHADE))
    assert levels.float().mean() > 0.6 and (inside < 0.5).any() and (inside > 0.99).any()


def test_captions_round_trip_and_scenes_follow_them():
    scenes = sample_scenes(500, np.random.default_rng(5))
    captions = scenes.captions
    assert caption([("circle", "red"), ("square", "blue")], True) == "a red circle and a blue square, striped"
    for text, shapes, colours, striped in zip(captions, scenes.shape, scenes.colour, scenes.striped):
        objects, style = parse_caption(text)
        assert objects == [(SHAPES[s], COLOURS[c]) for s, c in zip(shapes, colours) if s >= 0]
        assert style == striped
    again = scenes_for_captions(captions, np.random.default_rng(6))
    assert again.captions == captions
    assert not np.allclose(again.centre, scenes.centre)  # same content, new layout
    with pytest.raises(ValueError, match="names 0 objects"):
        scenes_for_captions(["a purple hexagon"], np.random.default_rng(0))


def test_tokenizer_knows_every_caption_word():
    tok = shapes_tokenizer()
    captions = sample_scenes(200, np.random.default_rng(7)).captions + [""]
    ids = tok(captions, padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    assert ids.shape == (201, MAX_TOKENS)
    assert (ids != tok.unk_token_id).all()
    assert len(tok) == 3 + len(vocabulary())
    assert tok.decode(tok("a red circle, striped").input_ids, skip_special_tokens=True) == "a red circle , striped"
