"""An image grid (fixed seeds x strengths) of a text-to-image backbone, to TensorBoard and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lineas.core.errors import ConfigError


class ImageGrid(L.Callback):
    """Renders ``prompts`` x ``seeds`` (rows) at each of ``strengths`` (columns) with the current maps.

    At the end of fitting (and every ``every_n_steps`` optimizer steps if given) the grid is logged to
    TensorBoard (tag ``images``, if the logger is a :class:`TensorBoardLogger`) and written to
    ``path`` (``..._stepN.png`` for the intermediate ones), atomically, on rank 0. The backbone must
    be a :class:`lineas.models.diffusion.DiffusionPipe`; its call settings (size, steps, guidance) are used.
    """

    def __init__(
        self,
        path: str | Path,
        prompts: str | Sequence[str],
        seeds: Sequence[int] = (0, 1),
        strengths: Sequence[float] = (0.0, 0.5, 1.0),
        every_n_steps: int | None = None,
    ) -> None:
        from lineas.core.prompts import read_prompts

        self.path = Path(path)
        self.prompts = read_prompts(prompts) if isinstance(prompts, str) else list(prompts)  # a file, or a list
        self.seeds = list(seeds)
        self.strengths = list(strengths)
        self.every_n_steps = every_n_steps

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, path: Path) -> None:
        from lineas.tasks.images import grid, render, save_png  # lazily: diffusers only when a grid is drawn

        backbone = pl_module.backbone
        if not hasattr(backbone, "pipe"):
            raise ConfigError(
                f"ImageGrid needs a text-to-image backbone (lineas.models.diffusion.DiffusionPipe), "
                f"not {type(backbone).__name__}: drop callbacks.image_grid from the recipe"
            )
        backbone.pipe.to(pl_module.device)  # the VAE too: Lightning moved only the sites' networks
        images = render(backbone.pipe, self.prompts, self.seeds, pl_module.maps, self.strengths, **backbone.call_kwargs)
        picture = grid(images)
        if isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_image("images", picture, trainer.global_step, dataformats="HWC")
        save_png(path, picture)
        rank_zero_info(
            f"image grid ({len(self.prompts)} prompts x {len(self.seeds)} seeds, strengths {self.strengths}): {path}"
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and trainer.is_global_zero:
            self._log(trainer, pl_module, self.path.with_name(f"{self.path.stem}_step{step}{self.path.suffix}"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._log(trainer, pl_module, self.path)
