"""Images from a diffusers pipeline at several strengths of the maps, and grids of them.

Each image (prompt, seed) draws its initial latents from its own generator seeded with ``seed``, so
an image does not depend on which other prompts share its batch, and strength 0 (the identity map,
exactly) gives the base pipeline's image. The maps act at every denoising step, on both halves of
classifier-free guidance: exactly what a merged pipeline does.
"""

from __future__ import annotations

import io
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lineas.core.files import write_bytes
from lineas.core.maps import AffineMaps
from lineas.core.outputs import Output
from lineas.models.diffusion import PipelineModules
from lineas.tasks.configs import GenerateConfig


def render(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int] = (0,),
    maps: AffineMaps | None = None,
    strengths: Sequence[float] = (1.0,),
    **call_kwargs: Any,
) -> np.ndarray:
    """Float images in [0, 1], shape ``(len(strengths), len(prompts) * len(seeds), H, W, 3)``.

    Rows are prompt-major (each prompt at every seed). Without ``maps``, one strength slot (the
    pipeline as it is). ``call_kwargs`` go to the pipeline call (height, steps, guidance, ...).
    """
    return render_rows(pipe, [(p, s) for p in prompts for s in seeds], maps, strengths, **call_kwargs)


def render_rows(
    pipe: Any,
    rows: Sequence[tuple[str, int]],
    maps: AffineMaps | None = None,
    strengths: Sequence[float] = (1.0,),
    **call_kwargs: Any,
) -> np.ndarray:
    """:func:`render` for explicit ``(prompt, seed)`` rows: shape ``(len(strengths), len(rows), H, W, 3)``."""
    sites = PipelineModules(pipe)
    out = []
    for lam in list(strengths) if maps is not None else [None]:
        generators = [torch.Generator().manual_seed(int(s)) for _, s in rows]
        with maps.apply(sites, strength=lam) if maps is not None else nullcontext():
            out.append(pipe([p for p, _ in rows], generator=generators, output_type="np", **call_kwargs).images)
    return np.stack(out)


def grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """One uint8 ``(H', W', 3)`` picture: a row per image, a column per strength (white gutters)."""
    cols, rows, h, w, _ = images.shape
    tiles = (images.clip(0, 1) * 255).round().astype(np.uint8)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (0, pad), (0, pad), (0, 0)), constant_values=255)
    picture = tiles.transpose(1, 2, 0, 3, 4).reshape(rows * (h + pad), cols * (w + pad), 3)
    return np.pad(picture, ((pad, 0), (pad, 0), (0, 0)), constant_values=255)


def save_png(path: str | Path, picture: np.ndarray) -> Path:
    """Write a uint8 RGB array as a PNG (its Software text: lineas), atomically."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "lineas")
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG", pnginfo=info)
    return write_bytes(path, buf.getvalue())


def lineas_png(path: Path) -> bool:
    """Whether ``path`` is a PNG that :func:`save_png` wrote."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == "lineas"
    except Exception:  # PIL raises several types for files that are not images
        return False


def grid_output(cfg: GenerateConfig) -> Output:
    """The claim on ``generate``'s image grid file."""
    return Output(cfg.image_grid, "grid", overwrite=cfg.overwrite, what="image_grid", ours=lineas_png)
