"""The fit's optimizer and learning-rate schedule as configuration (partials), and how they are recorded.

An optimizer factory is called as ``factory(params, lr=lr)``; a schedule factory as ``factory(optimizer,
total_steps)``. In recipes both are Hydra partials (``_partial_: true``), e.g.
``module.optimizer={_target_: torch.optim.SGD, _partial_: true, momentum: 0.9}``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from lineas.core.errors import ConfigError

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


def cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, min_lr_ratio: float = 1e-3
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Cosine decay from each group's lr to ``lr * min_lr_ratio`` over ``total_steps`` (the official schedule)."""
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError(f"module.scheduler.min_lr_ratio={min_lr_ratio}: give a ratio in [0, 1]")
    lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=lr * min_lr_ratio)


def constant(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr as given, at every step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def default_optimizer() -> OptimizerFactory:
    """Adam with the official code's betas (0.9, 0.9), no weight decay."""
    return functools.partial(torch.optim.Adam, betas=(0.9, 0.9))


def default_scheduler() -> SchedulerFactory:
    """Cosine decay to ``lr * 1e-3``."""
    return functools.partial(cosine, min_lr_ratio=1e-3)


def check_lr(lr: Any) -> None:
    """Refuse, in one line, a learning rate that is not a positive finite number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"module.lr={lr!r}: give a positive learning rate (e.g. 1e-3)")


def make_optimizer(factory: OptimizerFactory, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """``factory(params, lr=lr)``, with one clear error for a setting the optimizer refuses."""
    check_lr(lr)
    try:
        return factory(list(params), lr=lr)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"module.optimizer {describe(factory)}: {err}") from None


def describe(factory: Callable[..., Any]) -> dict[str, Any]:
    """``{"_target_": dotted name, **keywords}`` of a partial (or a plain callable), in plain JSON types."""
    func, keywords = factory, {}
    if isinstance(factory, functools.partial):
        func, keywords = factory.func, dict(factory.keywords)
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}".lstrip(".")
    return {"_target_": name, **{k: _plain(v) for k, v in sorted(keywords.items())}}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value
