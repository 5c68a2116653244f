"""The distributed part of fitting: one global W2 batch across ranks (DDP), and a sharded frozen base (FSDP2)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from lineas.core.blocks import find_stack
from lineas.core.sites import Site


def gather_samples(module: Any, pooled: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per site, the samples of every rank (identity on one process); ``module`` is the LightningModule.

    The W2 sort must see the global batch. Samples are gathered WITH gradients; ranks may hold
    different counts (token pooling, uneven batches), so they are padded to a common count first.
    Every rank then computes the same global loss; the gather's backward sums the W copies of each
    rank's gradient and DDP's averaging divides by W: the exact gradient, no extra factor.
    """
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return pooled
    flat = torch.cat(pooled, dim=1).contiguous()  # one collective for all sites
    counts = module.all_gather(torch.tensor(flat.shape[0], device=flat.device)).tolist()
    padded = nn.functional.pad(flat, (0, 0, 0, max(counts) - flat.shape[0]))
    parts = module.all_gather(padded, sync_grads=True)  # (world_size, max count, sum of dims)
    everything = torch.cat([p[:c] for p, c in zip(parts, counts)])
    return list(everything.split([p.shape[1] for p in pooled], dim=1))


def shard_frozen_base(base: nn.Module, sites: Sequence[Site], device_type: str, world_size: int) -> None:
    """FSDP2: shard ``base`` over all ranks, block by block (the blocks of the stack holding the sites)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device_type, (world_size,))
    stack = find_stack(base, sites)
    for block in stack.blocks if stack is not None else []:
        fully_shard(block, mesh=mesh, reshard_after_forward=True)
    fully_shard(base, mesh=mesh)


def average_gradients(params: Sequence[nn.Parameter], world_size: int) -> None:
    """All-reduce the gradients of ``params`` to their mean over ranks (one collective)."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)  # a sum: gloo has no average
    flat /= world_size
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))
