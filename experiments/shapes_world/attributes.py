"""Exact attribute metrics for the shapes world, read from the pixels of (generated) images.

:func:`detect` finds the objects of a batch of 32x32 RGB images and measures each one:

- **presence / count**: connected components (8-connected) of the pixels whose intensity (max over RGB)
  exceeds :data:`FOREGROUND`, at least :data:`MIN_AREA` pixels each;
- **colour**: the mean chromaticity (RGB / intensity) of the component's bright pixels, nearest of the
  four pure colours of :data:`experiments.shapes_world.world.RGB`;
- **shape**: a small CNN (:mod:`experiments.shapes_world.classifier`, trained on generator renders) on the
  component's soft mask, cropped square around its bounding box and resampled to 20x20 (so it reads
  the outline, not the size, the colour or the stripes);
- **style**: the stripe energy, the mean absolute vertical step of the intensity inside the component
  (eroded by one pixel) minus the mean horizontal step: about 0.15 for horizontal stripes, 0 for flat
  fills (isotropic noise cancels); an image is striped when the area-weighted mean energy of its
  objects exceeds :data:`STRIPE_THRESHOLD`.

:func:`follows` says whether each image shows what its template caption says (count, shapes, colours,
shape-colour pairs, style); the torchmetrics :class:`ConceptRate` accumulates how many images show an object of
a given shape / colour, or the style, over ``update`` calls.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
import torchmetrics

from experiments.shapes_world.classifier import CROP, load_classifier
from experiments.shapes_world.world import COLOURS, KINDS, RGB, SHAPES, STYLE, parse_caption

FOREGROUND = 0.2  # intensity above which a pixel belongs to an object (dark stripes are at 0.45)
MIN_AREA = 16  # smaller components are specks, not objects (the smallest object covers ~40 pixels)
CHROMA_FROM = 0.3  # pixels brighter than this give the colour
STRIPE_THRESHOLD = 0.05
CROP_MARGIN = 2.0  # pixels of context around the bounding box


@dataclass
class Detections:
    """Objects found in a batch of ``n`` images; per-object tensors have one row per object."""

    n: int
    image: torch.Tensor  # (M,) long: which image
    area: torch.Tensor  # (M,) long: pixels
    bbox: torch.Tensor  # (M, 4) long: y0, x0, y1, x1 (inclusive)
    colour: torch.Tensor  # (M,) long index into COLOURS
    shape: torch.Tensor  # (M,) long index into SHAPES
    stripe: torch.Tensor  # (M,) float stripe energy

    @property
    def count(self) -> torch.Tensor:
        """(n,) objects per image."""
        return torch.bincount(self.image, minlength=self.n)

    @property
    def stripe_energy(self) -> torch.Tensor:
        """(n,) float64: the area-weighted mean stripe energy of each image's objects (0 without objects)."""
        w = self.area.double()
        num = torch.zeros(self.n, dtype=torch.float64).index_add_(0, self.image, w * self.stripe.double())
        den = torch.zeros(self.n, dtype=torch.float64).index_add_(0, self.image, w)
        return num / den.clamp_min(1e-9)

    @property
    def striped(self) -> torch.Tensor:
        """(n,) bool: the image's :attr:`stripe_energy` exceeds the threshold."""
        return self.stripe_energy > STRIPE_THRESHOLD

    def histogram(self, attribute: str) -> torch.Tensor:
        """(n, K) objects per image of each value of ``shape`` (K=3), ``colour`` (K=4) or ``kind``
        (shape-colour pair, K=12: ``shape * 4 + colour``)."""
        k = {"shape": len(SHAPES), "colour": len(COLOURS), "kind": KINDS}[attribute]
        values = self.shape * len(COLOURS) + self.colour if attribute == "kind" else getattr(self, attribute)
        out = torch.zeros(self.n * k, dtype=torch.long)
        return out.index_add_(0, self.image * k + values, torch.ones_like(values)).view(self.n, k)


def intensity(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) max over the RGB channels of (N, 3, H, W) images in [0, 1]."""
    return images.amax(1)


def components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of a (N, H, W) bool mask: 0 outside, else the largest flat index + 1
    (over the whole batch) of a pixel of the component, so labels are unique across images."""
    n, h, w = mask.shape
    labels = torch.arange(1, n * h * w + 1, dtype=torch.float64).view(n, 1, h, w) * mask[:, None]
    for _ in range(h * w):
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * mask[:, None]
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels[:, 0].long()


def soft_mask(light: torch.Tensor) -> torch.Tensor:
    """Intensity mapped to [0, 1]: 0 at the background, 1 from the dark stripes up (outline only)."""
    return ((light - 0.1) / 0.25).clamp(0, 1)


def crops(light: torch.Tensor, image: torch.Tensor, member: torch.Tensor, bbox: torch.Tensor) -> torch.Tensor:
    """(M, 1, CROP, CROP) soft masks of each object alone (other objects zeroed), in a square window
    around its bounding box with :data:`CROP_MARGIN` pixels of margin, resampled bilinearly."""
    if len(image) == 0:
        return torch.zeros(0, 1, CROP, CROP)
    own = F.max_pool2d(member[:, None].float(), 3, stride=1, padding=1)  # the object and its anti-aliased rim
    x = soft_mask(light[image])[:, None] * own
    h, w = light.shape[-2:]
    y0, x0, y1, x1 = bbox.double().unbind(1)
    cy, cx = (y0 + y1 + 1) / 2, (x0 + x1 + 1) / 2  # pixel-edge coordinates
    half = torch.maximum(y1 - y0 + 1, x1 - x0 + 1) / 2 + CROP_MARGIN
    theta = torch.zeros(len(image), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 1, 1] = half / (w / 2), half / (h / 2)
    theta[:, 0, 2], theta[:, 1, 2] = cx / (w / 2) - 1, cy / (h / 2) - 1
    grid = F.affine_grid(theta.float(), [len(image), 1, CROP, CROP], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def stripe_energy(light: torch.Tensor, image: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """(M,) mean |vertical intensity step| minus mean |horizontal step| inside each object (eroded by 1 px)."""
    if len(image) == 0:
        return torch.zeros(0)
    inner = -F.max_pool2d(-member[:, None].float(), 3, stride=1, padding=1)[:, 0]  # erosion
    x = light[image]
    dy = (x[:, 1:] - x[:, :-1]).abs() * inner[:, 1:] * inner[:, :-1]
    dx = (x[:, :, 1:] - x[:, :, :-1]).abs() * inner[:, :, 1:] * inner[:, :, :-1]
    ny = (inner[:, 1:] * inner[:, :-1]).sum((1, 2))
    nx = (inner[:, :, 1:] * inner[:, :, :-1]).sum((1, 2))
    return dy.sum((1, 2)) / ny.clamp_min(1) - dx.sum((1, 2)) / nx.clamp_min(1)


def segment(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The objects of (N, 3, H, W) images: intensity (N, H, W), and per object its image (M,), its
    membership mask (M, H, W) and its bounding box (M, 4), objects ordered by image then label."""
    light = intensity(images)
    labels = components(light > FOREGROUND)
    n, h, w = labels.shape
    ids, area = torch.unique(labels.flatten(), return_counts=True)
    keep = (ids > 0) & (area >= MIN_AREA)
    ids = ids[keep]
    image = torch.div(ids - 1, h * w, rounding_mode="floor")
    member = labels[image] == ids[:, None, None]  # (M, H, W)
    rows, cols = member.any(2), member.any(1)
    r = torch.arange(h)
    c = torch.arange(w)
    big = max(h, w)
    bbox = torch.stack(
        [
            torch.where(rows, r, big).amin(1),
            torch.where(cols, c, big).amin(1),
            torch.where(rows, r, -1).amax(1),
            torch.where(cols, c, -1).amax(1),
        ],
        1,
    )
    return light, image, member, bbox


def colours(images: torch.Tensor, light: torch.Tensor, image: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """(M,) nearest pure colour to each object's mean chromaticity over its bright pixels."""
    if len(image) == 0:
        return torch.zeros(0, dtype=torch.long)
    bright = member & (light[image] > CHROMA_FROM)
    chroma = images[image] / light[image][:, None].clamp_min(1e-6)  # (M, 3, H, W)
    mean = (chroma * bright[:, None]).sum((2, 3)) / bright.sum((1, 2)).clamp_min(1)[:, None]
    return torch.cdist(mean, torch.from_numpy(RGB)).argmin(1)


def detect(images: torch.Tensor, classifier: torch.nn.Module | None = None) -> Detections:
    """Every object of (N, 3, H, W) images in [0, 1] (float; any device, measured on the CPU)."""
    images = images.detach().float().cpu().clamp(0, 1)
    light, image, member, bbox = segment(images)
    net = classifier if classifier is not None else default_classifier()
    with torch.no_grad():
        shape = net(crops(light, image, member, bbox)).argmax(1) if len(image) else torch.zeros(0, dtype=torch.long)
    return Detections(
        n=len(images),
        image=image,
        area=member.sum((1, 2)),
        bbox=bbox,
        colour=colours(images, light, image, member),
        shape=shape,
        stripe=stripe_energy(light, image, member),
    )


@functools.lru_cache(maxsize=1)
def default_classifier() -> torch.nn.Module:
    """The committed shape classifier (``experiments/shapes_world/shape_classifier.safetensors``), loaded once."""
    return load_classifier()


def expected(captions: Sequence[str]) -> dict[str, torch.Tensor]:
    """What template captions ask for: per caption the histograms ``shape`` (N, 3), ``colour`` (N, 4),
    ``kind`` (N, 12), the ``count`` (N,) and ``striped`` (N,)."""
    parsed = [parse_caption(c) for c in captions]
    n = len(parsed)
    kinds = [[SHAPES.index(s) * len(COLOURS) + COLOURS.index(c) for s, c in objects] for objects, _ in parsed]
    flat = torch.tensor([k for ks in kinds for k in ks], dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(n), torch.tensor([len(ks) for ks in kinds], dtype=torch.long))
    kind = torch.zeros(n * KINDS, dtype=torch.long).index_add_(0, rows * KINDS + flat, torch.ones_like(flat))
    kind = kind.view(n, KINDS)
    grid = kind.view(n, len(SHAPES), len(COLOURS))
    return {
        "kind": kind,
        "shape": grid.sum(2),
        "colour": grid.sum(1),
        "count": kind.sum(1),
        "striped": torch.tensor([st for _, st in parsed], dtype=torch.bool),
    }


def follows(det: Detections, captions: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per image (bool, N): ``count`` exact; every captioned ``shape`` / ``colour`` / shape-colour ``pair``
    present (at least as many times as captioned); ``style`` as captioned; ``all`` of them."""
    want = expected(captions)
    out = {
        "count": det.count == want["count"],
        "shape": (det.histogram("shape") >= want["shape"]).all(1),
        "colour": (det.histogram("colour") >= want["colour"]).all(1),
        "pair": (det.histogram("kind") >= want["kind"]).all(1),
        "style": det.striped == want["striped"],
    }
    out["all"] = torch.stack(list(out.values())).all(0)
    return out


class ConceptRate(torchmetrics.Metric):
    """The fraction of images that show the concept: an object of ``shape`` and/or ``colour`` (either may be
    None: any), or, with ``style=True``, the striped style. ``update(images)``; ``compute()`` -> a rate."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, shape: str | None = None, colour: str | None = None, style: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if style == (shape is not None or colour is not None):
            raise ValueError(f"give a shape and/or a colour, or style=True (the {STYLE!r} style), not both")
        if shape is not None and shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        if colour is not None and colour not in COLOURS:
            raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
        self.shape, self.colour, self.style = shape, colour, style
        self.add_state("hits", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def present(self, det: Detections) -> torch.Tensor:
        """(N,) bool: the image shows the concept."""
        if self.style:
            return det.striped
        match = torch.ones_like(det.image, dtype=torch.bool)
        if self.shape is not None:
            match &= det.shape == SHAPES.index(self.shape)
        if self.colour is not None:
            match &= det.colour == COLOURS.index(self.colour)
        return torch.zeros(det.n, dtype=torch.long).index_add_(0, det.image, match.long()) > 0

    def update(self, images: torch.Tensor) -> None:
        self.hits += self.present(detect(images)).sum().to(self.hits)
        self.total += len(images)

    def compute(self) -> torch.Tensor:
        return self.hits.double() / self.total.clamp_min(1)
