"""What a fit is of, beyond its data and sites: one frozen record, checked when it is made, written to the maps'
``lineas.json`` and to every checkpoint (a resume must match it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from lineas.core.errors import ConfigError
from lineas.core.estimators import ESTIMATORS, quantile_levels

LOSS = "squared 1-D W2 per dimension; mean over dimensions, then over sites"
POOLINGS = ("mean", "token")


@dataclass(frozen=True)
class FitSettings:
    """The model, estimator, loss, optimizer and schedule of a fit, as recorded with its maps."""

    base_model: str
    model_type: Optional[str]
    estimator: str
    clip_quantiles: Optional[tuple[float, float]]  # the baselines' clip (percent), None: unclipped
    pooling: str
    fit_steps: int  # denoising steps per fit forward (1 for language models)
    normalize: bool
    shift: bool
    optimizer: dict[str, Any]  # lineas.training.optim.describe(...) and the lr
    scheduler: dict[str, Any]
    sparsity: dict[str, Any]
    control: Optional[dict[str, Any]]  # {prompts, weight} of the control-preserving term
    loss: str = LOSS

    def __post_init__(self) -> None:
        if self.estimator != "lineas" and self.estimator not in ESTIMATORS:
            raise ConfigError(f"estimator {self.estimator!r}: choose lineas, {', '.join(ESTIMATORS)}")
        if self.clip_quantiles is not None and self.estimator == "lineas":
            raise ConfigError(
                "module.clip applies to the closed-form baselines (estimator=linear_act or "
                "mean_shift); LinEAS maps are fitted unclipped"
            )
        if self.estimator != "lineas" and self.fit_steps > 1:
            raise ConfigError(
                f"estimator={self.estimator} fits each site's map in closed form from one denoising step: "
                f"set backbone.fit_steps=1 (it is {self.fit_steps})"
            )
        if self.clip_quantiles is not None:
            quantile_levels(self.clip_quantiles)  # refuse bad quantiles before any forward pass
        if self.pooling not in POOLINGS:
            raise ConfigError(f"module.pooling={self.pooling!r}: choose 'mean' or 'token'")

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON holds them (``lineas.json``, the checkpoint's fit record)."""
        out = asdict(self)
        out["clip_quantiles"] = list(self.clip_quantiles) if self.clip_quantiles is not None else None
        return out
