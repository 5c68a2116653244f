"""The shapes world: seeded 32x32 RGB scenes of one or two objects, and their captions.

A scene holds one or two non-overlapping objects on a black background. Each object has a shape
(:data:`SHAPES`), a colour (:data:`COLOURS`, pure RGB), a random centre and a random half-extent
(every shape fills the square ``centre +- size``: a disc, an axis-aligned square, an upright triangle
with its apex at the top). The style is a scene attribute: ``striped`` objects alternate their colour and
:data:`STRIPE_SHADE` times it in horizontal bands :data:`STRIPE_PERIOD` pixels apart (a texture that
keeps the object's outline, colour and size); plain objects are filled flat. Edges are anti-aliased
(``SUPERSAMPLE`` x ``SUPERSAMPLE`` samples per pixel).

Captions come from one template: ``"a red circle"``, ``"a blue square, striped"``,
``"a green triangle and a red circle"``; :func:`parse_caption` reads them back. Everything is vectorised
over scenes (numpy), and every draw comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
KINDS = len(SHAPES) * len(COLOURS)  # shape-colour pairs, indexed shape * len(COLOURS) + colour
RGB = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=np.float32)
STYLE = "striped"
SIZE = 32  # image side, pixels
MAX_OBJECTS = 2
SUPERSAMPLE = 4
STRIPE_PERIOD = 6  # pixels: 3 bright rows, 3 dark rows (a period of 3 latent pixels behind a x2 VAE)
STRIPE_SHADE = 0.45  # dark stripes: the colour times this
_OBJECT = re.compile(rf"\ba ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")


def vocabulary() -> list[str]:
    """Every word and punctuation mark of the captions (for a word-level tokenizer)."""
    return ["a", "and", ",", STYLE, *SHAPES, *COLOURS]


@dataclass(frozen=True)
class Layout:
    """How scenes are drawn: object count, style and size ranges (half-extents, pixels)."""

    p_two: float = 0.5  # probability of a two-object scene
    p_striped: float = 0.5
    size_one: tuple[float, float] = (5.0, 8.0)  # half-extent of a lone object
    size_two: tuple[float, float] = (4.5, 6.5)  # half-extent of each object of a pair
    gap: float = 2.0  # minimum distance between the bounding squares of two objects
    margin: float = 1.0  # minimum distance from a bounding square to the image border


@dataclass
class Scenes:
    """A batch of scenes: per-object arrays have a second axis of :data:`MAX_OBJECTS` (-1 / 0 where absent)."""

    shape: np.ndarray  # (N, 2) int64 index into SHAPES, -1 for no object
    colour: np.ndarray  # (N, 2) int64 index into COLOURS, -1 for no object
    striped: np.ndarray  # (N,) bool
    centre: np.ndarray  # (N, 2, 2) float32 (x, y) in pixels, image origin at the top-left corner
    size: np.ndarray  # (N, 2) float32 half-extent in pixels, 0 for no object
    phase: np.ndarray  # (N,) float32 vertical offset of the stripes, pixels

    def __len__(self) -> int:
        return len(self.striped)

    @property
    def count(self) -> np.ndarray:
        """(N,) number of objects."""
        return (self.shape >= 0).sum(1)

    @property
    def captions(self) -> list[str]:
        """The template caption of every scene (objects in their array order)."""
        return [
            caption([(SHAPES[s], COLOURS[c]) for s, c in zip(shapes, colours) if s >= 0], bool(st))
            for shapes, colours, st in zip(self.shape.tolist(), self.colour.tolist(), self.striped.tolist())
        ]

    def render(self, chunk: int = 256) -> torch.Tensor:
        """(N, 3, 32, 32) float32 images in [0, 1]."""
        out = [_render(self, slice(i, i + chunk)) for i in range(0, len(self), chunk)]
        return torch.from_numpy(np.concatenate(out)) if out else torch.zeros(0, 3, SIZE, SIZE)


def caption(objects: Sequence[tuple[str, str]], striped: bool) -> str:
    """``"a red circle and a blue square, striped"`` from ``[(shape, colour), ...]`` and the style."""
    text = " and ".join(f"a {colour} {shape}" for shape, colour in objects)
    return f"{text}, {STYLE}" if striped else text


def parse_caption(text: str) -> tuple[list[tuple[str, str]], bool]:
    """The ``[(shape, colour), ...]`` and the style a template caption names."""
    objects = [(shape, colour) for colour, shape in _OBJECT.findall(text.lower())]
    return objects, bool(re.search(rf"\b{STYLE}\b", text.lower()))


def sample_scenes(n: int, rng: np.random.Generator, layout: Layout = Layout()) -> Scenes:
    """``n`` random scenes: 1 or 2 objects with distinct (shape, colour), random style, positions, sizes."""
    two = rng.random(n) < layout.p_two
    first = rng.integers(0, KINDS, n)
    second = (first + rng.integers(1, KINDS, n)) % KINDS
    kinds = np.stack([first, np.where(two, second, -1)], 1)
    shape = np.where(kinds >= 0, kinds // len(COLOURS), -1)
    colour = np.where(kinds >= 0, kinds % len(COLOURS), -1)
    return _scenes(shape, colour, rng.random(n) < layout.p_striped, rng, layout)


def scenes_for_captions(captions: Sequence[str], rng: np.random.Generator, layout: Layout = Layout()) -> Scenes:
    """Scenes that show exactly what each template caption says, at random positions, sizes, stripe phases."""
    shape = np.full((len(captions), MAX_OBJECTS), -1, dtype=np.int64)
    colour = shape.copy()
    striped = np.zeros(len(captions), dtype=bool)
    for i, text in enumerate(captions):
        objects, striped[i] = parse_caption(text)
        if not 1 <= len(objects) <= MAX_OBJECTS:
            raise ValueError(f"caption {text!r} names {len(objects)} objects; the shapes world draws 1 or 2")
        for k, (s, c) in enumerate(objects):
            shape[i, k], colour[i, k] = SHAPES.index(s), COLOURS.index(c)
    return _scenes(shape, colour, striped, rng, layout)


def _scenes(shape: np.ndarray, colour: np.ndarray, striped: np.ndarray, rng: np.random.Generator, layout: Layout):
    centre, size = _place(shape[:, 1] >= 0, rng, layout)
    present = shape >= 0
    return Scenes(
        shape=shape.astype(np.int64),
        colour=colour.astype(np.int64),
        striped=np.asarray(striped, dtype=bool),
        centre=np.where(present[..., None], centre, 0).astype(np.float32),
        size=np.where(present, size, 0).astype(np.float32),
        phase=rng.uniform(0, STRIPE_PERIOD, len(shape)).astype(np.float32),
    )


def _place(two: np.ndarray, rng: np.random.Generator, layout: Layout, tries: int = 32):
    """Centres (N, 2, 2) and half-extents (N, 2); the second object only where ``two``, never overlapping."""
    n = len(two)
    lo, hi = (
        np.where(two, layout.size_two[0], layout.size_one[0]),
        np.where(two, layout.size_two[1], layout.size_one[1]),
    )
    centre = np.zeros((n, 2, 2), dtype=np.float64)
    size = np.zeros((n, 2), dtype=np.float64)
    todo = np.arange(n)
    while len(todo):
        m = len(todo)
        s = rng.uniform(lo[todo, None], hi[todo, None], (m, tries + 1))  # object 0, then candidates for object 1
        span = SIZE - 2 * (s + layout.margin)
        c = s[..., None] + layout.margin + rng.random((m, tries + 1, 2)) * span[..., None]
        apart = np.abs(c[:, 1:] - c[:, :1]).max(-1) - (s[:, 1:] + s[:, :1]) >= layout.gap  # (m, tries)
        ok = apart.any(1) | ~two[todo]
        pick = apart.argmax(1)
        rows = todo[ok]
        centre[rows, 0], size[rows, 0] = c[ok, 0], s[ok, 0]
        centre[rows, 1], size[rows, 1] = c[ok, 1 + pick[ok]], s[ok, 1 + pick[ok]]
        todo = todo[~ok]
    return centre, size


def _render(scenes: Scenes, rows: slice) -> np.ndarray:
    shape, colour, size = scenes.shape[rows], scenes.colour[rows], scenes.size[rows]
    cx, cy = scenes.centre[rows, :, 0, None, None], scenes.centre[rows, :, 1, None, None]  # (n, 2, 1, 1)
    t = (np.arange(SIZE * SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE  # sample positions, pixels
    dx, dy = t[None, None, None, :] - cx, t[None, None, :, None] - cy  # (n, 2, 1, W), (n, 2, H, 1)
    s = size[..., None, None]
    inside = np.select(
        [shape[..., None, None] == 0, shape[..., None, None] == 1, shape[..., None, None] == 2],
        [
            dx**2 + dy**2 <= s**2,
            (np.abs(dx) <= s) & (np.abs(dy) <= s),
            (np.abs(dy) <= s) & (np.abs(dx) <= (dy + s) / 2),
        ],
        False,
    )  # (n, 2, H, W) at SUPERSAMPLE resolution
    dark = ((t[None, :] + scenes.phase[rows, None]) % STRIPE_PERIOD) >= STRIPE_PERIOD / 2  # (n, H)
    shade = np.where(scenes.striped[rows, None] & dark, STRIPE_SHADE, 1.0).astype(np.float32)
    ink = inside * shade[:, None, :, None]
    n, k, h = ink.shape[:3]
    ink = ink.reshape(n, k, SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean((3, 5))  # (n, 2, 32, 32)
    rgb = np.where(colour[..., None] >= 0, RGB[np.clip(colour, 0, None)], 0.0)  # (n, 2, 3)
    return np.einsum("nkhw,nkc->nchw", ink, rgb).clip(0, 1).astype(np.float32)
