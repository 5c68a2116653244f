"""Prefix cache and activation checkpointing: same loss and gradients, less work / memory."""

from __future__ import annotations

import pytest
import torch

from lineas import LinEASModule
from lineas.core.blocks import find_stack
from tests.helpers import random_maps

DEEP = [r"model\.layers\.[23]\.mlp\.down_proj", r"model\.layers\.2\.self_attn\.o_proj"]
PROMPTS = [
    "I hate this so much, it is awful.",
    "You are a terrible person.",
    "Go away",
    "What a horrible, rotten day it has been from start to end.",
]


def make(backbone, **options) -> LinEASModule:
    module = LinEASModule(backbone, sites=DEEP, **options)
    # the same non-identity maps for every variant
    random_maps(module.maps, scale=0.2, generator=torch.Generator().manual_seed(1))
    return module


def step(module: LinEASModule, batch, targets) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = module.site_w2(module.pooled(batch, with_maps=True), targets).mean()
    loss.backward()
    grads = [p.grad.clone() for p in module.maps.parameters()]
    module.maps.zero_grad()
    return loss.detach(), grads


def batches(backbone):
    # Different compositions, orders and padded lengths: all prompts, then a permuted shorter subset.
    return [backbone.collate(PROMPTS), backbone.collate([PROMPTS[2], PROMPTS[0]]), backbone.collate(PROMPTS[::-1])]


def test_stack_of_a_decoder(tiny_llama):
    module = make(tiny_llama)
    stack = find_stack(module.base, module.sites)
    assert stack.name == "model.layers" and stack.blocks is module.base.model.layers
    assert [stack.block_of(s) for s in module.sites] == [2, 2, 3]


@pytest.mark.parametrize(
    "options", [{"prefix_cache": True}, {"checkpointing": True}, {"prefix_cache": True, "checkpointing": True}]
)
def test_same_loss_and_gradients(tiny_llama, no_hooks_left, options):
    plain, fast = make(tiny_llama), make(tiny_llama, **options)
    no_hooks_left(tiny_llama.model)
    targets = [t.sort(0).values for t in plain.pooled(tiny_llama.collate(["Thanks", "You are kind."]), False)]
    for batch in batches(tiny_llama):
        loss, grads = step(plain, batch, targets)
        loss_fast, grads_fast = step(fast, batch, targets)
        torch.testing.assert_close(loss_fast, loss, rtol=1e-6, atol=1e-7)
        for g, g_fast in zip(grads, grads_fast):
            assert g.abs().max() > 0
            torch.testing.assert_close(g_fast, g, rtol=1e-5, atol=1e-7)
    assert all("forward" not in m.__dict__ for m in tiny_llama.model.modules())
    assert len(tiny_llama.model.model.layers) == 4


def test_prefix_cache_skips_the_early_blocks(tiny_llama):
    module = make(tiny_llama, prefix_cache=True)
    assert module._prefix.start == 2
    runs = {i: 0 for i in range(4)}
    handles = [
        layer.register_forward_pre_hook(lambda m, a, i=i: runs.__setitem__(i, runs[i] + 1))
        for i, layer in enumerate(tiny_llama.model.model.layers)
    ]
    try:
        first, second, third = batches(tiny_llama)
        module.pooled(first, with_maps=True)  # fills the cache: every block runs
        assert runs == {0: 1, 1: 1, 2: 1, 3: 1}
        module.pooled(second, with_maps=True)  # cached rows, shorter batch: blocks 0 and 1 skipped
        module.pooled(third, with_maps=True)
        assert runs == {0: 1, 1: 1, 2: 3, 3: 3}
        module.pooled(tiny_llama.collate(["A prompt it has never seen."]), with_maps=True)
        assert runs == {0: 2, 1: 2, 2: 4, 3: 4}
        assert module._prefix.ids.shape[0] == len(PROMPTS) + 1
    finally:
        for handle in handles:
            handle.remove()


def saved_bytes(module: LinEASModule, batch) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of one step."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pooled = module.pooled(batch, with_maps=True)
    sum(p.sum() for p in pooled).backward()
    return sum(storages.values())


def test_checkpointing_keeps_fewer_activations(tiny_llama):
    batch = tiny_llama.collate(PROMPTS * 4)
    plain = saved_bytes(LinEASModule(tiny_llama, sites="mlp_out"), batch)
    checkpointed = LinEASModule(tiny_llama, sites="mlp_out", checkpointing=True)
    assert checkpointed._checkpoint == ["model.layers.0", "model.layers.1", "model.layers.2"]
    assert saved_bytes(checkpointed, batch) < 0.6 * plain


def test_prefix_cache_needs_a_prefix_and_a_stack(tiny_llama):
    with pytest.warns(UserWarning, match="block 0"):
        assert LinEASModule(tiny_llama, sites="mlp_out", prefix_cache=True)._prefix is None
    with pytest.raises(ValueError, match=r"outside it: \['model.norm'\]"):
        LinEASModule(tiny_llama, sites=[r"model\.layers\.1\.mlp\.down_proj", r"model\.norm"], prefix_cache=True)
