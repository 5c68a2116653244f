"""``GatedLinEASModule``: LinEAS maps and their per-token gate fitted together (end-to-end DSAS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lineas.core.errors import ConfigError
from lineas.core.gate import THRESHOLD, Gate
from lineas.core.maps import AffineMaps
from lineas.models.backbone import Backbone
from lineas.training.module import LinEASModule


class GatedLinEASModule(LinEASModule):
    """:class:`LinEASModule` whose maps carry a trainable :class:`~lineas.core.gate.Gate`.

    When fitting starts, each site's probe (``components`` principal directions, logistic regression with
    ``l2``) is fitted on the base model's pooled activations of the source fit prompts against the ``control``
    fit prompts (the first ``control_fit`` after shuffling with ``control_seed``; the rest held out); sites below
    ``threshold`` held-out accuracy get ``weak_sites`` (``steer``: gate 1, ``off``: gate 0) and stay so. Then
    every step minimises the W2 loss of the gated maps on the source plus ``control_weight`` times the
    control-preserving term of :class:`LinEASModule`. The probes' weights and biases train with the maps (the
    principal directions stay). With ``estimator`` ``linear_act``
    or ``mean_shift`` the closed-form maps stay fixed and only the gate trains.
    """

    def __init__(
        self,
        backbone: Backbone,
        control: str | Path | list[str],
        components: int = 5,
        l2: float = 1.0,
        threshold: float = THRESHOLD,
        weak_sites: str = "steer",
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, control=control, **kwargs)
        if not self.control["heldout"]:
            raise ConfigError("the control set needs held-out prompts to check the gate's probes: lower control_fit")
        self.l2, self.threshold, self.weak_sites = l2, threshold, weak_sites
        k = min(components, *self.maps.dims)
        info = {"fit": "end_to_end", "control_weight": self.control_weight}
        self.maps.gate = Gate(self.sites, self.maps.dims, k, info)
        if self.estimator != "lineas":
            self.maps.omega.requires_grad_(False)
            self.maps.beta.requires_grad_(False)
        self._heldout: dict[str, list[torch.Tensor]] = {}

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
            if (side, split) != ("control", "fit")
        }
        base["control", "fit"] = self._control_base  # pooled by LinEASModule for the control term
        self.maps.gate.fit_(
            base["source", "fit"],
            base["control", "fit"],
            base["source", "heldout"],
            base["control", "heldout"],
            self.l2,
            self.threshold,
            self.weak_sites,
        )
        self._heldout = {"source": base["source", "heldout"], "control": base["control", "heldout"]}

    def fitted_maps(self) -> AffineMaps:
        """The maps with their gate; each gated site's held-out accuracy is that of its trained probe."""
        gate = self.maps.gate
        for i, state in enumerate(gate.states):
            if state == "gated" and self._heldout:
                gate.accuracy[i] = gate.heldout_accuracy(i, self._heldout["source"][i], self._heldout["control"][i])
        return super().fitted_maps()
