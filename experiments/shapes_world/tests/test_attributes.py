"""The shapes-world attribute metrics on generator images whose labels are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.shapes_world.attributes import (
    STRIPE_THRESHOLD,
    ConceptRate,
    components,
    default_classifier,
    detect,
    expected,
    follows,
)
from experiments.shapes_world.evaluate import caption_following
from experiments.shapes_world.train_classifier import accuracy, corrupt
from experiments.shapes_world.world import COLOURS, SHAPES, sample_scenes, scenes_for_captions


@pytest.fixture(scope="module")
def scenes():
    return sample_scenes(600, np.random.default_rng(2024))


@pytest.fixture(scope="module")
def images(scenes):
    return scenes.render()


def test_components_on_a_hand_made_mask():
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[0, 0:2, 0:2] = True  # a block
    mask[0, 2, 2] = True  # touches it diagonally: the same component (8-connected)
    mask[0, 4:6, 4:6] = True  # a second component
    mask[1, 1, 1:5] = True  # image 1: a bar
    labels = components(mask)
    assert (labels[~mask] == 0).all()
    assert len(torch.unique(labels[0][mask[0]])) == 2 and len(torch.unique(labels[1][mask[1]])) == 1
    assert labels[0, 0, 0] == labels[0, 2, 2] != labels[0, 5, 5]
    assert set(torch.unique(labels[1][mask[1]]).tolist()).isdisjoint(torch.unique(labels[0][mask[0]]).tolist())


def test_detections_match_the_generator_labels(scenes, images):
    det = detect(images)
    assert torch.equal(det.count, torch.from_numpy(scenes.count))
    assert torch.equal(det.striped, torch.from_numpy(scenes.striped))
    want = expected(scenes.captions)
    assert torch.equal(det.histogram("colour"), want["colour"])
    assert (det.histogram("kind") == want["kind"]).all(1).double().mean() >= 0.99
    # stripe energies separate the styles with a margin on both sides of the threshold
    striped = torch.from_numpy(scenes.striped)[det.image]
    assert det.stripe[~striped].abs().max() < STRIPE_THRESHOLD / 2
    assert det.stripe[striped].min() > 1.5 * STRIPE_THRESHOLD
    # an image's energy is its objects' area-weighted mean, computed here image by image
    for i in range(det.n):
        mine = det.image == i
        want_energy = (det.area[mine] * det.stripe[mine].double()).sum() / det.area[mine].sum() if mine.any() else 0.0
        assert float(det.stripe_energy[i]) == pytest.approx(float(want_energy), rel=1e-9, abs=1e-12)


def test_caption_following_is_perfect_on_renders_and_catches_each_kind_of_mismatch(scenes, images):
    rates = caption_following(images, scenes.captions)["all"]
    for key in ("count", "colour", "style"):
        assert rates[key] == 1.0, (key, rates)
    assert rates["shape"] >= 0.99 and rates["pair"] >= 0.99 and rates["all"] >= 0.99
    det = detect(images)
    # the style word flipped: every image fails on style only
    flipped = [c.removesuffix(", striped") if c.endswith("striped") else c + ", striped" for c in scenes.captions]
    hit = follows(det, flipped)
    assert not hit["style"].any() and hit["colour"].all()
    # another shape for the first object: the pair fails in every image, the shape in most
    swapped = []
    for c in scenes.captions:
        shape = next(s for s in SHAPES if f" {s}" in c)
        swapped.append(c.replace(f" {shape}", f" {SHAPES[(SHAPES.index(shape) + 1) % 3]}", 1))
    hit = follows(det, swapped)
    assert hit["pair"].double().mean() < 0.02 and hit["shape"].double().mean() < 0.35
    # one object asked for, two drawn (and vice versa): the count fails
    two = torch.from_numpy(scenes.count == 2)
    firsts = [c.split(" and ")[0].removesuffix(", striped") for c in scenes.captions]
    assert not follows(det, firsts)["count"][two].any()


@pytest.mark.parametrize("shape,colour", [("circle", None), (None, "yellow"), ("triangle", "green")])
def test_concept_rate_counts_the_images_with_the_concept(scenes, images, shape, colour):
    match = np.ones(scenes.shape.shape, dtype=bool) & (scenes.shape >= 0)
    if shape is not None:
        match &= scenes.shape == SHAPES.index(shape)
    if colour is not None:
        match &= scenes.colour == COLOURS.index(colour)
    metric = ConceptRate(shape=shape, colour=colour)
    metric.update(images)
    assert float(metric.compute()) == pytest.approx(match.any(1).mean(), abs=0.01)
    assert 0.1 < match.any(1).mean() < 0.6  # not vacuous


def test_style_rate_and_argument_checks(scenes, images):
    metric = ConceptRate(style=True)
    metric.update(images)
    assert float(metric.compute()) == pytest.approx(scenes.striped.mean(), abs=1e-9)
    metric.reset()
    metric.update(scenes_for_captions(["a red circle, striped"] * 8, np.random.default_rng(0)).render())
    assert float(metric.compute()) == 1.0
    with pytest.raises(ValueError, match="not both"):
        ConceptRate(shape="circle", style=True)
    with pytest.raises(ValueError, match="shape must be one of"):
        ConceptRate(shape="hexagon")


def test_an_empty_image_has_no_objects():
    det = detect(torch.zeros(3, 3, 32, 32))
    assert det.count.tolist() == [0, 0, 0] and not det.striped.any()
    hit = follows(det, ["a red circle"] * 3)
    assert not hit["count"].any() and not hit["shape"].any()


def test_shape_classifier_accuracy_on_held_out_renders():
    clean = accuracy(default_classifier(), n=1500, seed=777)
    assert clean["shape"] >= 0.99 and clean["count"] == 1.0, clean
    noisy = accuracy(default_classifier(), n=1500, seed=778, corrupted=True)
    assert noisy["shape"] >= 0.98 and noisy["count"] >= 0.99, noisy


def test_detection_survives_mild_corruption(scenes, images):
    out = caption_following(corrupt(images, torch.Generator().manual_seed(0)), scenes.captions)["all"]
    assert min(out.values()) >= 0.97, out
