"""``LinEASModule``: fit per-site affine maps end to end with the sorted W2 loss."""

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, Iterable, Iterator, Sequence

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_info

from lineas.core.blocks import PrefixCache, find_stack
from lineas.core.errors import ConfigError, FitError
from lineas.core.estimators import ESTIMATORS, fit_incremental_
from lineas.core.hooks import attach, probe
from lineas.core.loss import Pooling, check_mask, pool, sorted_w2
from lineas.core.maps import AffineMaps
from lineas.core.sparsity import Sparsity
from lineas.datamodules import split_prompts
from lineas.models.backbone import Backbone
from lineas.models.families import model_type_of, resolve_sites
from lineas.training.distributed import average_gradients, gather_samples, shard_frozen_base
from lineas.training.optim import (
    OptimizerFactory,
    SchedulerFactory,
    default_optimizer,
    default_scheduler,
    describe,
    make_optimizer,
)
from lineas.training.resume import check_fit_record, replan_cosine
from lineas.training.settings import FitSettings

PROBE_PROMPTS = ["Hello there.", "A short example prompt."]


@contextmanager
def frozen_base_expected() -> Iterator[None]:
    """Within the block, Lightning does not warn that the frozen base is in eval mode (on purpose: no dropout
    while fitting the maps), nor about its own use of a torch pytree API that torch deprecated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", module=r"lightning\..*")
        yield


class LinEASModule(L.LightningModule):
    """A frozen backbone with trainable :class:`AffineMaps` at ``sites``.

    Each step runs a batch of source prompts with every map active (so each site sees all upstream
    maps), pools each site's output, and compares it to the cached, sorted pooled outputs of the
    target prompts run without maps: loss = mean over sites of the mean over dimensions of the squared
    1-D W2 distance. The forward stops right after the last site (``early_exit``). After every
    optimizer step the proximal operator of ``sparsity`` is applied in the optimizer's metric (for Adam,
    per coordinate ``lr / (sqrt(v_hat) + eps)``), so the fixed points minimise W2 + penalty.
    With ``normalize``, each dimension's W2 is divided by the variance of the fitting targets in that
    dimension, so that a few massive-activation dimensions do not dominate the loss (not in the paper).
    With ``shift=False`` the maps are scale-only (``beta`` stays 0): they fold into the weights of
    architectures that have no bias to receive a shift (Mistral, Phi-3, Qwen2's MLP).
    ``estimator`` ``linear_act`` or ``mean_shift`` fills the maps in closed form when fitting starts
    (the baselines of :mod:`lineas.core.estimators`, as the official Linear-AcT code runs them; run them with
    ``max_steps=0``); with ``clip`` their maps act only strictly inside the ``clip_quantiles`` (percent)
    of each site's pooled source samples (official: min and max), which makes them live-only maps.
    ``checkpointing`` recomputes, in the backward pass, the activations of the blocks from the first
    site's to the last site's (memory for compute; same loss and gradients). ``prefix_cache`` stores,
    per prompt, the hidden states entering the first site's block and starts later forwards there
    (exact: nothing before that block depends on the maps; see :class:`lineas.core.blocks.PrefixCache`).
    The frozen base stays in the dtype it was loaded in (e.g. bfloat16); maps and loss are float32.
    ``optimizer`` is called as ``optimizer(params, lr=lr)`` and ``scheduler`` as ``scheduler(optimizer,
    total_steps)`` (partials: :mod:`lineas.training.optim`); both are recorded with the maps and in checkpoints.
    Defaults are those of the official code: Adam, lr 1e-3, betas (0.9, 0.9), cosine decay to lr*1e-3.
    With plain SGD the proximal step at ``tau = lr`` is the paper's Algorithm 1.
    With ``control`` (prompts that should come out unchanged, e.g. neutral text), every step adds
    ``control_weight`` times the control-preserving term (:meth:`control_change`): the first ``control_fit`` of
    them, shuffled with ``control_seed``, are run with the maps and their pooled activations compared to the
    base model's (not in the paper; the maps stay affine, so they merge as before).
    """

    def __init__(
        self,
        backbone: Backbone,
        sites: str | Sequence[str] = "default",
        pooling: Pooling = "mean",
        lr: float = 1e-3,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        sparsity: Sparsity | None = None,
        early_exit: bool = True,
        normalize: bool = False,
        shift: bool = True,
        estimator: str = "lineas",
        checkpointing: bool = False,
        prefix_cache: bool = False,
        clip: bool = False,
        clip_quantiles: Sequence[float] = (0.0, 100.0),
        control: str | Path | Sequence[str] | None = None,
        control_fit: int = 32,
        control_weight: float = 1.0,
        control_seed: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.base = backbone.model.requires_grad_(False).eval()
        self.sites = resolve_sites(self.base, sites if isinstance(sites, str) else list(sites))
        dims, self.last_site = probe(self.base, self.sites, lambda: backbone.forward(backbone.collate(PROBE_PROMPTS)))
        self.pooling = pooling
        self.lr = lr
        self.optimizer_factory = optimizer or default_optimizer()
        self.scheduler_factory = scheduler or default_scheduler()
        self.sparsity = sparsity or Sparsity()
        self.early_exit = early_exit
        self._checkpoint, self._prefix = self._block_plan(checkpointing, prefix_cache, backbone)
        self.estimator = estimator
        self.clip_quantiles = tuple(float(q) for q in clip_quantiles) if clip else None
        self.normalize = normalize
        if not control_weight >= 0:  # NaN too
            raise ConfigError(f"module.control_weight={control_weight}: give a weight >= 0")
        self.control_weight = control_weight
        if control is not None:
            prompts = control if isinstance(control, (str, Path)) else list(control)
            control = split_prompts(prompts, control_fit, seed=control_seed, side="control")
        self.control = control
        self.settings = FitSettings(
            base_model=backbone.spec,
            model_type=model_type_of(self.base) or None,
            estimator=estimator,
            clip_quantiles=self.clip_quantiles,
            pooling=pooling,
            fit_steps=backbone.fit_steps,
            normalize=normalize,
            shift=shift,
            optimizer={**describe(self.optimizer_factory), "lr": lr},
            scheduler=describe(self.scheduler_factory),
            sparsity=self.sparsity.as_dict(),
            control={"prompts": len(control["fit"]), "weight": control_weight} if control is not None else None,
        )
        self.maps = AffineMaps(self.sites, dims, info=self.settings.as_dict())
        self.maps.beta.requires_grad_(shift)
        # Every rank loads the same frozen weights: DDP need not broadcast or check them.
        frozen = [f"base.{n}" for n, _ in self.base.named_parameters()] + [
            f"base.{n}" for n, _ in self.base.named_buffers()
        ]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, frozen)
        self.strict_loading = False  # checkpoints hold the maps, not the frozen base
        self._targets: dict[str, list[torch.Tensor]] = {}
        self._target_var: list[torch.Tensor] | None = None
        self._joint: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []  # concepts 2..K: fit targets, var
        self._val: list[list[torch.Tensor]] = []
        self._control_base: list[torch.Tensor] = []  # per site, the base model's pooled control fit activations
        self._control_var: list[torch.Tensor] = []
        self._control_batches: list[dict[str, Any]] = []
        self._sharded = False

    def _block_plan(
        self, checkpointing: bool, prefix_cache: bool, backbone: Backbone
    ) -> tuple[list[str], PrefixCache | None]:
        """Blocks to checkpoint, and the prefix cache, from where the sites sit in the block stack."""
        if not (checkpointing or prefix_cache):
            return [], None
        stack = find_stack(self.base, self.sites)
        where = [stack.block_of(s) for s in self.sites] if stack is not None else [None]
        if None in where:
            outside = [str(s) for s, b in zip(self.sites, where) if b is None] if stack else "all"
            raise ConfigError(
                f"checkpointing / prefix_cache need every site inside one block stack "
                f"(a ModuleList of layers); sites outside it: {outside}"
            )
        first, last = min(where), stack.block_of(self.last_site)
        blocks = stack.block_names(first, last) if checkpointing else []
        if not prefix_cache:
            return blocks, None
        if first == 0:
            warnings.warn("prefix_cache: the first site is in block 0, so there is no prefix to cache", stacklevel=2)
            return blocks, None
        if not {"input_ids", "attention_mask"} <= set(backbone.collate(PROBE_PROMPTS)):
            raise ConfigError(
                f"prefix_cache needs token batches (input_ids, attention_mask); "
                f"{type(backbone).__name__} does not make them"
            )
        return blocks, PrefixCache(stack, first)

    def _prefix_of(self, batch: dict[str, Any]) -> ContextManager:
        if self._prefix is None:
            return nullcontext()
        return self._prefix(batch["input_ids"].masked_fill(~batch["attention_mask"].bool(), -1))

    # --- running the backbone -------------------------------------------------------------
    def train(self, mode: bool = True) -> LinEASModule:
        super().train(mode)
        self.base.eval()  # frozen base: dropout stays off while the maps train
        return self

    def pooled(self, batch: dict[str, Any], with_maps: bool, site: int | None = None) -> list[torch.Tensor]:
        """Per site, the pooled float32 samples ``(N, D)`` of ``batch`` (maps active or not).

        With ``site=k``, only site ``k``'s samples, from a forward that stops right after it.
        """
        capture: dict = {}
        checkpoint = self._checkpoint if with_maps and torch.is_grad_enabled() else ()
        steps = self.backbone.fit_steps  # each site fires once per step; the forward must reach the last one
        stop = self.sites[site] if site is not None else self.last_site if self.early_exit and steps == 1 else None
        maps = self.maps if with_maps else None
        with (
            attach(self.base, self.sites, maps, capture, stop_after=stop, checkpoint=checkpoint, accumulate=steps > 1),
            self._prefix_of(batch),
        ):
            self.backbone.forward(batch)
        mask = self.backbone.position_mask(batch)
        check_mask(mask)
        return [pool(capture[s], mask, self.pooling) for s in (self.sites if site is None else [self.sites[site]])]

    @torch.no_grad()
    def collect(
        self, batches: Iterable[dict[str, Any]], with_maps: bool, site: int | None = None
    ) -> list[torch.Tensor]:
        """:meth:`pooled` over several batches, concatenated per site."""
        parts = [self.pooled(move_data_to_device(b, self.device), with_maps, site) for b in batches]
        return [torch.cat(p) for p in zip(*parts)]

    def site_w2(
        self,
        pooled: list[torch.Tensor],
        targets_sorted: list[torch.Tensor],
        target_var: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-site loss ``(S,)``: squared W2 averaged over dimensions (variance-normalised if asked, by
        ``target_var``, default the fitting targets')."""
        per_dim = [sorted_w2(p, t) for p, t in zip(pooled, targets_sorted)]
        if self.normalize:
            per_dim = [d / v for d, v in zip(per_dim, target_var or self._target_var)]
        return torch.stack([d.mean() for d in per_dim])

    @torch.no_grad()
    def heldout_w2(self, strength: float | None = None) -> dict[str, float]:
        """Per-site W2 of the held-out source prompts (maps at ``strength``) against held-out targets."""
        dm = self.trainer.datamodule
        self.cache_targets()
        with self.maps.at_strength(strength):
            w2 = self.site_w2(self.collect(dm.source_dataloader("heldout"), True), self._targets["heldout"])
        return dict(zip(map(str, self.sites), w2.tolist()))

    def cache_targets(self) -> None:
        """Pool and sort the target prompts' site outputs, without maps, once (they never depend on the maps)."""
        dm = self.trainer.datamodule
        for split in ("fit", "heldout"):
            if split not in self._targets and dm.prompts["target"][split]:
                self._targets[split] = [t.sort(0).values for t in self.collect(dm.target_dataloader(split), False)]
        if self._target_var is None:
            self._target_var = _variances(self._targets["fit"])
        for k in range(len(self._joint) + 1, getattr(dm, "concepts", 1)):  # a joint fit's other concepts
            fit = [t.sort(0).values for t in self.collect(dm.target_dataloader("fit", concept=k), False)]
            self._joint.append((fit, _variances(fit)))

    # --- Lightning hooks ------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (FSDP2): shard the frozen base over all ranks, block by block.

        The maps stay whole on every rank; :meth:`on_after_backward` averages their gradients.
        """
        from lightning.pytorch.strategies import ModelParallelStrategy

        if isinstance(self.trainer.strategy, ModelParallelStrategy) and not self._sharded:
            shard_frozen_base(self.base, self.sites, self.device.type, self.trainer.world_size)
            self._sharded = True

    def on_after_backward(self) -> None:
        if self._sharded:  # DDP (or one process) averages the gradients itself
            average_gradients(list(self.maps.parameters()), self.trainer.world_size)

    def on_fit_start(self) -> None:
        low = {str(p.dtype) for p in self.maps.parameters() if p.dtype != torch.float32}
        if low:
            raise FitError(
                f"the maps are {', '.join(low)}, not float32: trainer.precision "
                f"{self.trainer.precision!r} casts them. Load the base in low precision with "
                "backbone.dtype=bfloat16 and keep trainer.precision=32-true or bf16-mixed"
            )
        if self.estimator != "lineas" and getattr(self.trainer.datamodule, "concepts", 1) > 1:
            raise ConfigError(f"estimator={self.estimator} fits one concept in closed form: a joint fit needs lineas")
        self.cache_targets()
        if self.control is not None:
            self._control_batches = [move_data_to_device(b, self.device) for b in self._batches(self.control["fit"])]
            self._control_base = self.collect(self._control_batches, with_maps=False)
            self._control_var = _variances(self._control_base)
        if self.estimator != "lineas":
            fit_incremental_(self.maps, self._collect_fit_site, ESTIMATORS[self.estimator], self.clip_quantiles)

    def _batches(self, prompts: list[str]) -> list[dict[str, Any]]:
        size = self.trainer.datamodule.eval_batch_size
        return [self.backbone.collate(prompts[i : i + size]) for i in range(0, len(prompts), size)]

    def control_change(self) -> torch.Tensor:
        """Mean over sites of the mean over dimensions of the squared change of the control prompts' pooled
        activations (maps on against the base model's), each dimension divided by its variance over them."""
        pooled = [torch.cat(p) for p in zip(*(self.pooled(b, with_maps=True) for b in self._control_batches))]
        return torch.stack(
            [((p - b) ** 2 / v).mean() for p, b, v in zip(pooled, self._control_base, self._control_var)]
        ).mean()

    def _collect_fit_site(self, side: str, site: int) -> torch.Tensor:
        dm = self.trainer.datamodule
        loader = dm.source_dataloader("fit") if side == "source" else dm.target_dataloader("fit")
        return self.collect(loader, with_maps=True, site=site)[0]

    def training_step(self, batch: dict[str, Any] | list[dict[str, Any]], batch_idx: int) -> torch.Tensor:
        # A joint fit (JointPromptPairs) gives a list, concept k's source batch at k: the loss sums their W2 terms.
        targets = [(self._targets["fit"], self._target_var), *self._joint]
        losses = sum(
            self.site_w2(gather_samples(self, self.pooled(b, with_maps=True)), t, v)
            for b, (t, v) in zip(batch if isinstance(batch, list) else [batch], targets)
        )
        bad = ~torch.isfinite(losses)
        if bad.any():
            names = [str(s) for s, b in zip(self.sites, bad.tolist()) if b]
            raise FitError(
                f"non-finite W2 loss at step {self.global_step} at site(s) {names}: lower the learning "
                "rate, load the base in float32, or check the prompts; no maps were written"
            )
        loss = losses.mean()
        if self.control is not None and self.control_weight > 0:
            keep = self.control_change()
            self.log("train/control", keep, prog_bar=True)
            loss = loss + self.control_weight * keep
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/w2/{s}": v for s, v in zip(self.sites, losses.detach())})
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.sparsity.prox_(self.maps, optimizer)
        support = self.maps.support(self.sparsity.eps)
        self.log("train/support", float(support["total"]), prog_bar=self.sparsity.active)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._val.append(self.pooled(batch, with_maps=True))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        self.cache_targets()
        w2 = self.site_w2([torch.cat(p) for p in zip(*self._val)], self._targets["heldout"])
        self._val.clear()
        self.log("val/w2", w2.mean(), prog_bar=True)
        self.log_dict({f"val/w2/{s}": v for s, v in zip(self.sites, w2)})

    def configure_optimizers(self) -> dict[str, Any]:
        opt = make_optimizer(self.optimizer_factory, (p for p in self.maps.parameters() if p.requires_grad), self.lr)
        sched = self.scheduler_factory(opt, max(1, int(self.trainer.estimated_stepping_batches)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def fit_record(self) -> dict[str, Any]:
        """What this fit is of: model, sites, estimator, loss, optimizer and data (checked when it is resumed)."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        return {
            **self.settings.as_dict(),
            "sites": [str(s) for s in self.sites],
            "dims": self.maps.dims,
            "data": dm.fingerprint() if hasattr(dm, "fingerprint") else None,
            "batch_size": self._global_batch(dm),
        }

    def _global_batch(self, dm: Any) -> int | None:
        """Source prompts per optimizer step over all ranks (a resume may run on another number of processes)."""
        per_rank = getattr(dm, "batch_size", None)
        return per_rank * self.trainer.world_size if per_rank is not None and self._trainer is not None else per_rank

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("maps.")}
        checkpoint["lineas"] = self.fit_record()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_fit_record(checkpoint.get("lineas"), self.fit_record(), self.trainer.ckpt_path)

    def on_train_start(self) -> None:
        scheduler = self.lr_schedulers()
        if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            return
        lr = replan_cosine(scheduler, max(1, int(self.trainer.estimated_stepping_batches)))
        if lr is not None:
            rank_zero_info(
                f"extending the run to {self.trainer.max_steps} steps: the cosine schedule is re-planned "
                f"over {self.trainer.max_steps} steps (lr now {lr:.3g} at step {self.global_step})"
            )

    def fitted_maps(self) -> AffineMaps:
        """The maps, with the step count recorded in their info."""
        self.maps.info["steps"] = int(self.global_step)
        return self.maps


def _variances(targets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per site, the variance of each dimension of the targets, floored (the W2 normalisation's divisor)."""
    var = [t.var(0, unbiased=False) for t in targets]
    return [v.clamp_min(1e-6 * v.mean().item() + 1e-12) for v in var]
