"""The shape classifier of :mod:`experiments.shapes_world.attributes`: a small CNN on 20x20 soft-mask crops
of one object.

Trained by :mod:`experiments.shapes_world.train_classifier` (seeded, on generator renders); the weights are
``shape_classifier.safetensors`` beside this file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from experiments.shapes_world.world import SHAPES

WEIGHTS = "shape_classifier.safetensors"
CROP = 20  # side of the classifier's input, pixels


class ShapeNet(nn.Module):
    """Three 3x3 conv layers (16, 32, 32 channels, two 2x2 max-pools) and a linear layer over the 5x5 map."""

    def __init__(self, n_classes: int = len(SHAPES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(32 * (CROP // 4) ** 2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, 1, 20, 20) crops -> (M, 3) logits."""
        return self.head(self.features(x).flatten(1))


def weights_path() -> Path:
    """The committed weights (``shape_classifier.safetensors`` beside this file)."""
    return Path(__file__).with_name(WEIGHTS)


def load_classifier(path: str | Path | None = None) -> ShapeNet:
    """The trained classifier (CPU, eval mode, no grad)."""
    from safetensors.torch import load_file

    net = ShapeNet()
    net.load_state_dict(load_file(str(path if path is not None else weights_path())))
    return net.eval().requires_grad_(False)
