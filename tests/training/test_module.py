"""LinEASModule: end-to-end gradients through the frozen tiny Llama, early exit, pooling, its sites, DDP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lineas
from lineas import LinEASModule, Site, SiteError, sorted_w2
from lineas.cli.train import train
from tests.helpers import compose_cfg, random_maps

MLP_OUT = [Site(f"model.layers.{i}.mlp.down_proj") for i in range(4)]


def _params(module: LinEASModule) -> list[torch.nn.Parameter]:
    return list(module.maps.omega) + list(module.maps.beta)


def _grads(loss: torch.Tensor, module: LinEASModule) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, _params(module), allow_unused=True))


def _is_zero(g: torch.Tensor | None) -> bool:
    return g is None or bool(torch.all(g == 0))


# --- end to end -------------------------------------------------------------------------------
def test_loss_on_last_site_reaches_upstream_maps(tiny_llama, source_batch, target_batch, no_hooks_left):
    no_hooks_left(tiny_llama.model)
    module = LinEASModule(tiny_llama, sites="mlp_out")
    assert module.sites == MLP_OUT and module.last_site == MLP_OUT[-1]
    assert module.maps.dims == [64] * 4
    targets = [t.sort(0).values for t in module.collect([target_batch], with_maps=False)]
    assert [t.shape for t in targets] == [(5, 64)] * 4
    pooled = module.pooled(source_batch, with_maps=True)
    assert [p.shape for p in pooled] == [(4, 64)] * 4
    loss = sorted_w2(pooled[-1], targets[-1]).mean()  # only the LAST site
    grads = _grads(loss, module)
    s = len(module.sites)
    for i in range(s):  # every site, the first (layer 0) included, gets a gradient
        for g in (grads[i], grads[s + i]):
            assert g is not None and g.dtype == torch.float32 and g.shape == (64,)
            assert torch.isfinite(g).all() and g.abs().max() > 0, f"no gradient on site {module.sites[i]}"


def test_loss_on_first_site_leaves_downstream_maps_without_gradient(tiny_llama, source_batch, target_batch):
    module = LinEASModule(tiny_llama, sites="mlp_out")
    random_maps(module.maps, scale=0.2)
    targets = [t.sort(0).values for t in module.collect([target_batch], with_maps=False)]
    pooled = module.pooled(source_batch, with_maps=True)
    loss = sorted_w2(pooled[0], targets[0]).mean()  # only the FIRST site
    grads = _grads(loss, module)
    s = len(module.sites)
    assert grads[0].abs().max() > 0 and grads[s].abs().max() > 0
    for i in range(1, s):
        assert _is_zero(grads[i]) and _is_zero(grads[s + i]), f"downstream site {module.sites[i]} got a gradient"


def test_first_site_gradient_matches_finite_differences(tiny_llama, source_batch, target_batch):
    # The autograd gradient of the full loss w.r.t. one upstream coefficient, against a finite difference.
    module = LinEASModule(tiny_llama, sites=[r"model\.layers\.[03]\.mlp\.down_proj"])
    targets = [t.sort(0).values for t in module.collect([target_batch], with_maps=False)]

    def loss() -> torch.Tensor:
        return module.site_w2(module.pooled(source_batch, with_maps=True), targets).mean()

    (g,) = torch.autograd.grad(loss(), [module.maps.beta[0]])
    k = int(g.abs().argmax())
    h = 1e-2
    with torch.no_grad():
        module.maps.beta[0][k] += h
        up = loss().item()
        module.maps.beta[0][k] -= 2 * h
        down = loss().item()
        module.maps.beta[0][k] += h
    assert g[k].item() == pytest.approx((up - down) / (2 * h), rel=2e-2)


# --- early exit -------------------------------------------------------------------------------
def test_early_exit_gives_the_same_loss_and_gradients(tiny_llama, source_batch, target_batch, no_hooks_left):
    model = tiny_llama.model
    no_hooks_left(model)
    sites = [r"model\.layers\.[0-2]\.mlp\.down_proj", r"model\.layers\.1\.input_layernorm"]
    early = LinEASModule(tiny_llama, sites=sites, early_exit=True)
    full = LinEASModule(tiny_llama, sites=sites, early_exit=False)
    assert early.base is full.base is model
    assert early.last_site == Site("model.layers.2.mlp.down_proj")
    random_maps(early.maps, scale=0.2)
    full.maps.load_state_dict(early.maps.state_dict())

    targets = [t.sort(0).values for t in early.collect([target_batch], with_maps=False)]
    targets_full = [t.sort(0).values for t in full.collect([target_batch], with_maps=False)]
    for a, b in zip(targets, targets_full):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    calls = {"lm_head": 0, "layer3": 0, "norm": 0}

    def counter(name):
        def hook(*_):
            calls[name] += 1

        return hook

    handles = [
        model.lm_head.register_forward_hook(counter("lm_head")),
        model.model.layers[3].register_forward_hook(counter("layer3")),
        model.model.norm.register_forward_hook(counter("norm")),
    ]
    try:
        pooled_early = early.pooled(source_batch, with_maps=True)
        assert calls == {"lm_head": 0, "layer3": 0, "norm": 0}  # really stopped after layer 2
        pooled_full = full.pooled(source_batch, with_maps=True)
        assert calls == {"lm_head": 1, "layer3": 1, "norm": 1}
    finally:
        for h in handles:
            h.remove()

    for a, b in zip(pooled_early, pooled_full):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    loss_early = early.site_w2(pooled_early, targets).mean()
    loss_full = full.site_w2(pooled_full, targets).mean()
    assert loss_early.item() > 0
    torch.testing.assert_close(loss_early, loss_full, rtol=1e-6, atol=1e-7)
    loss_early.backward()
    loss_full.backward()
    for pe, pf in zip(_params(early), _params(full)):
        assert pe.grad is not None and pe.grad.abs().max() > 0
        torch.testing.assert_close(pe.grad, pf.grad, rtol=0, atol=1e-6)


def test_early_exit_returns_normally_and_removes_hooks(tiny_llama, source_batch):
    model = tiny_llama.model
    module = LinEASModule(tiny_llama, sites=[r"model\.layers\.0\.mlp\.down_proj"])
    with torch.no_grad():
        module.pooled(source_batch, with_maps=True)
    assert not [n for n, m in model.named_modules() if m._forward_hooks]
    # the model still runs to the end afterwards
    with torch.no_grad():
        out = tiny_llama.forward(source_batch)
    assert out.logits.shape[:2] == source_batch["input_ids"].shape


def test_pooled_uses_the_position_mask(tiny_llama, source_batch):
    # A prompt's pooled sample does not depend on what else is in the batch (right padding is masked out).
    module = LinEASModule(tiny_llama, sites="mlp_out")
    random_maps(module.maps, scale=0.2)
    with torch.no_grad():
        together = module.pooled(source_batch, with_maps=True)
        alone = module.pooled(tiny_llama.collate(["Go away"]), with_maps=True)
    for t, a in zip(together, alone):
        torch.testing.assert_close(t[3:4], a, rtol=1e-4, atol=1e-5)


# --- sites, DDP -------------------------------------------------------------------------------
def test_module_rejects_sites_off_the_forward_path(tiny_llama):
    # rotary_emb fires; a module that never runs cannot carry a map. lm_head runs; so build a pattern that
    # matches a module defined but unused: none in Llama, so check the probe on an added dummy instead.
    model = tiny_llama.model
    model.model.add_module("unused_dummy", nn.Identity())
    try:
        with pytest.raises(SiteError, match="never fired"):
            LinEASModule(tiny_llama, sites=[r"model\.unused_dummy"])
    finally:
        del model.model.unused_dummy
    assert not hasattr(model.model, "unused_dummy")


def test_ddp_leaves_the_frozen_base_alone(tiny_llama):
    # DDP would otherwise broadcast every frozen weight from rank 0 at start-up (16 GB for an 8B base).
    module = LinEASModule(tiny_llama, sites="mlp_out")
    names = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
    ignored = set(module._ddp_params_and_buffers_to_ignore)
    assert ignored == {n for n in names if n.startswith("base.")} and len(ignored) > 30
    assert {n for n in names if n not in ignored} == {n for n, _ in module.maps.named_parameters(prefix="maps")}


# --- errors -----------------------------------------------------------------------------------
def test_non_finite_loss_names_the_site_and_writes_nothing(tmp_path, monkeypatch):
    real_init = lineas.LinEASModule.__init__

    def init_with_poisoned_map(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        with torch.no_grad():
            self.maps.beta[2][5] = float("nan")  # site 2 and everything downstream go non-finite

    monkeypatch.setattr(lineas.LinEASModule, "__init__", init_with_poisoned_map)
    out = tmp_path / "run"
    with pytest.raises(lineas.FitError, match=r"model\.layers\.2\.mlp\.down_proj") as err:
        train(compose_cfg("recipe=tiny", f"output_dir={out}", "trainer.enable_progress_bar=false"))
    assert "model.layers.1.mlp.down_proj" not in str(err.value)
    assert not (out / "maps").exists() and not (out / "fit_summary.json").exists()
