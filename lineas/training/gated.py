"""``GatedLinEASModule``: LinEAS maps and their per-token gate fitted together (end-to-end DSAS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from lineas.core.errors import ConfigError
from lineas.core.gate import THRESHOLD, Gate
from lineas.core.maps import AffineMaps
from lineas.datamodules import split_prompts
from lineas.models.backbone import Backbone
from lineas.training.module import LinEASModule


class GatedLinEASModule(LinEASModule):
    """:class:`LinEASModule` whose maps carry a trainable :class:`~lineas.core.gate.Gate`.

    When fitting starts, each site's probe (``components`` principal directions, logistic regression with
    ``l2``) is fitted on the base model's pooled activations of the source fit prompts against the ``control``
    fit prompts (the first ``control_fit`` after shuffling with ``seed``; the rest held out); sites below
    ``threshold`` held-out accuracy get ``weak_sites`` (``steer``: gate 1, ``off``: gate 0) and stay so. Then
    every step minimises the W2 loss of the gated maps on the source plus ``control_weight`` times a term that
    keeps the control prompts' activations unchanged: per site, the mean over dimensions of the squared change
    of their pooled activations, divided by each dimension's variance over the control prompts. The probes'
    weights and biases train with the maps (the principal directions stay). With ``estimator`` ``linear_act``
    or ``mean_shift`` the closed-form maps stay fixed and only the gate trains.
    """

    def __init__(
        self,
        backbone: Backbone,
        control: str | Path | list[str],
        control_fit: int = 32,
        control_weight: float = 1.0,
        components: int = 5,
        l2: float = 1.0,
        threshold: float = THRESHOLD,
        weak_sites: str = "steer",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        self.control = split_prompts(control, control_fit, seed=seed, side="control")
        if not self.control["heldout"]:
            raise ConfigError("the control set needs held-out prompts to check the gate's probes: lower control_fit")
        self.control_weight, self.l2, self.threshold, self.weak_sites = control_weight, l2, threshold, weak_sites
        k = min(components, *self.maps.dims)
        self.maps.gate = Gate(self.sites, self.maps.dims, k, {"fit": "end_to_end", "control_weight": control_weight})
        if self.estimator != "lineas":
            self.maps.omega.requires_grad_(False)
            self.maps.beta.requires_grad_(False)
        self._control_base: list[torch.Tensor] = []
        self._control_var: list[torch.Tensor] = []
        self._heldout: dict[str, list[torch.Tensor]] = {}
        self._control_batches: list[dict[str, Any]] = []

    def _batches(self, prompts: list[str]) -> list[dict[str, Any]]:
        size = self.trainer.datamodule.eval_batch_size
        return [self.backbone.collate(prompts[i : i + size]) for i in range(0, len(prompts), size)]

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is not None:
            raise ConfigError("resuming an end-to-end gated fit is not supported: start it again")
        super().on_fit_start()
        source = self.trainer.datamodule.prompts["source"]
        if not source["heldout"]:
            raise ConfigError("the gate's held-out check needs held-out source prompts: lower data.num_fit")
        base = {  # the probes see the base model, as post hoc ones do
            (side, split): self.collect(self._batches(prompts[split]), with_maps=False)
            for side, prompts in (("source", source), ("control", self.control))
            for split in ("fit", "heldout")
        }
        self.maps.gate.fit_(
            base["source", "fit"],
            base["control", "fit"],
            base["source", "heldout"],
            base["control", "heldout"],
            self.l2,
            self.threshold,
            self.weak_sites,
        )
        self._control_base = base["control", "fit"]
        var = [v.var(0, unbiased=False) for v in base["control", "fit"]]
        self._control_var = [v.clamp_min(1e-6 * v.mean().item() + 1e-12) for v in var]  # no division by ~0
        self._heldout = {"source": base["source", "heldout"], "control": base["control", "heldout"]}
        self._control_batches = [move_data_to_device(b, self.device) for b in self._batches(self.control["fit"])]

    def control_change(self) -> torch.Tensor:
        """Mean over sites of the variance-normalised squared change of the control prompts' pooled activations."""
        pooled = [torch.cat(p) for p in zip(*(self.pooled(b, with_maps=True) for b in self._control_batches))]
        return torch.stack(
            [
                ((p - b.to(p.device)) ** 2 / v.to(p.device)).mean()
                for p, b, v in zip(pooled, self._control_base, self._control_var)
            ]
        ).mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        w2 = super().training_step(batch, batch_idx)
        keep = self.control_change()
        self.log("train/control", keep, prog_bar=True)
        return w2 + self.control_weight * keep

    def fitted_maps(self) -> AffineMaps:
        """The maps with their gate; each gated site's held-out accuracy is that of its trained probe."""
        gate = self.maps.gate
        for i, state in enumerate(gate.states):
            if state == "gated" and self._heldout:
                gate.accuracy[i] = gate.heldout_accuracy(i, self._heldout["source"][i], self._heldout["control"][i])
        return super().fitted_maps()
