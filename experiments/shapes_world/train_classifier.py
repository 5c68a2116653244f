"""Train the shape classifier of :mod:`experiments.shapes_world.attributes`, seeded, on one CPU thread (about a minute).

The training data are generator renders (:mod:`experiments.shapes_world.world`) passed through the same
segmentation and cropping as generated images, with mild corruptions so that the classifier reads
imperfect images too (a brightness gain, a partial 3x3 blur, Gaussian noise)::

    python -m experiments.shapes_world.train_classifier --out experiments/shapes_world/shape_classifier.safetensors
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from experiments.shapes_world import attributes as m
from experiments.shapes_world.classifier import ShapeNet, weights_path
from experiments.shapes_world.world import Scenes, sample_scenes
from lineas.core.files import write_bytes


def corrupt(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per image: a gain in [0.8, 1.15], a blend with its 3x3 box blur (weight in [0, 0.7]), noise sd in [0, 0.04]."""
    n = len(images)
    u = torch.rand(n, 3, 1, 1, 1, generator=gen)
    x = images * (0.8 + 0.35 * u[:, 0])
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = x + 0.7 * u[:, 1] * (blur - x)
    return (x + 0.04 * u[:, 2] * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def labelled_crops(scenes: Scenes, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops of the detected objects, the true shape of each (that of the scene object nearest to the
    component's centre), and per image whether the number of components equals the number of objects."""
    light, image, member, bbox = m.segment(images)
    centre = torch.stack([(bbox[:, 1] + bbox[:, 3] + 1) / 2, (bbox[:, 0] + bbox[:, 2] + 1) / 2], 1).double()
    truth = torch.from_numpy(scenes.centre).double()[image]  # (M, 2 objects, xy)
    dist = (truth - centre[:, None]).norm(dim=-1)
    dist = dist.masked_fill(torch.from_numpy(scenes.shape)[image] < 0, math.inf)
    label = torch.from_numpy(scenes.shape)[image].gather(1, dist.argmin(1, keepdim=True))[:, 0]
    found = torch.bincount(image, minlength=len(scenes)) == torch.from_numpy(scenes.count)
    return m.crops(light, image, member, bbox), label, found


def train_classifier(seed: int = 0, steps: int = 400, batch: int = 128, lr: float = 3e-3) -> ShapeNet:
    """A :class:`ShapeNet` trained on corrupted renders; every batch is a function of (seed, step)."""
    torch.manual_seed(seed)
    net = ShapeNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for step in range(steps):
        rng = np.random.default_rng([seed, 7, step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        scenes = sample_scenes(batch, rng)
        x, y, _ = labelled_crops(scenes, corrupt(scenes.render(), gen))
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{steps}: loss {float(loss):.4f}", flush=True)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(net: nn.Module, n: int = 4000, seed: int = 12345, corrupted: bool = False) -> dict[str, float]:
    """On ``n`` fresh renders (a seed the training never uses): per-object shape accuracy of the whole
    detector, and the rate of images whose object count is right."""
    rng = np.random.default_rng([seed])
    scenes = sample_scenes(n, rng)
    images = scenes.render()
    if corrupted:
        images = corrupt(images, torch.Generator().manual_seed(seed))
    x, y, found = labelled_crops(scenes, images)
    return {"shape": float((net(x).argmax(1) == y).double().mean()), "count": float(found.double().mean())}


def main(argv: list[str] | None = None) -> None:
    from safetensors.torch import save

    parser = argparse.ArgumentParser(description="Train the shapes-world shape classifier (seeded, CPU).")
    parser.add_argument("--out", default=str(weights_path()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    net = train_classifier(args.seed, args.steps)
    print(f"trained in {time.perf_counter() - t0:.1f} s")
    print("held-out renders:", accuracy(net), "corrupted:", accuracy(net, corrupted=True))
    write_bytes(args.out, save({k: v.contiguous() for k, v in net.state_dict().items()}))
    print(f"weights: {args.out} ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
