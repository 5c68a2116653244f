"""Closed-form baselines: least squares against brute force; Linear-AcT and mean shift against an independent
numpy implementation of the official algorithm (incremental, clipped, per token); on the real SmolLM2, the
official clip keeps perplexity in its regime (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lineas
from lineas.cli.train import train
from lineas.core.estimators import sorted_affine_fit, source_bounds
from lineas.core.files import data_path
from lineas.core.prompts import read_prompts
from lineas.datamodules import PromptPairDataModule
from lineas.metrics.perplexity import perplexity_with_se
from tests.helpers import compose_cfg


@pytest.mark.parametrize("n,m", [(8, 8), (6, 4), (3, 7)])
def test_sorted_affine_fit_is_least_squares_on_sorted_samples(rng, n, m):
    x = rng.normal(size=(n, 5)) * 2 + 1
    y = rng.normal(size=(m, 5)) * 0.5 - 3
    omega, beta = sorted_affine_fit(torch.tensor(x), torch.tensor(y))
    # Brute force: replicate each sample so both sides have lcm(n, m) samples, then ordinary lstsq.
    k = math.lcm(n, m)
    xs, ys = np.sort(np.repeat(x, k // n, axis=0), 0), np.sort(np.repeat(y, k // m, axis=0), 0)
    for d in range(5):
        (a, b), *_ = np.linalg.lstsq(np.stack([xs[:, d], np.ones(k)], 1), ys[:, d], rcond=None)
        assert omega[d].item() == pytest.approx(a, rel=1e-4, abs=1e-5)
        assert beta[d].item() == pytest.approx(b, rel=1e-4, abs=1e-4)


def test_constant_dimension_keeps_identity_scale():
    x = torch.zeros(4, 2)
    x[:, 1] = torch.arange(4.0)
    omega, beta = sorted_affine_fit(x, torch.arange(8.0).reshape(4, 2))
    assert omega[0].item() == 1.0 and torch.isfinite(beta).all()


class _Stop(Exception):
    pass


def _numpy_map_hook(omega, beta, lo, hi, lam: float):
    """The official hook: ``z + lam*(T(z) - z)`` where ``lo < z < hi`` (per token), ``z`` elsewhere; float32."""
    w = (1 + lam * (omega - 1)).astype(np.float32)
    b = (lam * beta).astype(np.float32)

    def hook(module, args, out):
        z = out.detach().numpy()
        return torch.from_numpy(np.where((lo < z) & (z < hi), z * w + b, z).astype(np.float32))

    return hook


def _numpy_baseline(model, names, source, target, kind):
    """Incremental fit in numpy: per site, pooled samples with every earlier clipped map active."""
    fitted = []
    for k, name in enumerate(names):
        pooled = {}
        for side, batch in (("source", source), ("target", target)):
            captured = {}

            def capture(module, args, out, captured=captured):
                captured["z"] = out.detach().double().numpy()
                raise _Stop

            modules = dict(model.named_modules())
            handles = [
                modules[n].register_forward_hook(_numpy_map_hook(*fitted[j], 1.0)) for j, n in enumerate(names[:k])
            ]
            handles.append(modules[name].register_forward_hook(capture))
            try:
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            except _Stop:
                pass
            finally:
                for h in handles:
                    h.remove()
            mask = batch["attention_mask"].numpy().astype(np.float64)[..., None]
            pooled[side] = (captured["z"] * mask).sum(1) / mask.sum(1)
        x, y = np.sort(pooled["source"], 0), np.sort(pooled["target"], 0)
        if kind == "linear_act":
            xc, yc = x - x.mean(0), y - y.mean(0)
            omega = (xc * yc).sum(0) / (xc * xc).sum(0)
            beta = y.mean(0) - omega * x.mean(0)
        else:
            omega, beta = np.ones(x.shape[1]), y.mean(0) - x.mean(0)
        fitted.append((omega, beta, pooled["source"].min(0), pooled["source"].max(0)))
    return fitted


@pytest.mark.parametrize("kind", ["linear_act", "mean_shift"])
def test_clipped_baseline_matches_a_numpy_implementation_of_the_official_algorithm(tiny_llama, kind):
    dm = PromptPairDataModule(data_path("toxicity/toxic.txt"), data_path("tiny/polite.txt"), num_fit=16)
    source, target = dm.prompts["source"]["fit"], dm.prompts["target"]["fit"]
    maps = lineas.fit(
        tiny_llama,
        source,
        target,
        sites="mlp_out",
        estimator=kind,
        clip=True,
        steps=0,
        heldout_fraction=0.0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert maps.clipped and maps.info["clip_quantiles"] == [0.0, 100.0]
    model = tiny_llama.model
    names = [s.module for s in maps.sites]
    src, tgt = tiny_llama.collate(source), tiny_llama.collate(target)
    assert not (src["input_ids"][:, 0] == tiny_llama.tokenizer.bos_token_id).any()  # no BOS to exclude
    reference = _numpy_baseline(model, names, src, tgt, kind)
    for k, (omega, beta, lo, hi) in enumerate(reference):
        lo_t, hi_t = maps.bounds[k]
        np.testing.assert_allclose(lo_t.numpy(), lo, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(hi_t.numpy(), hi, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(maps.omega[k].detach().numpy(), omega, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(maps.beta[k].detach().numpy(), beta, rtol=1e-4, atol=1e-4)

    # Outputs, per token, on other prompts: live maps against the numpy hooks, at strengths 0.5 and 1.
    batch = tiny_llama.collate(dm.prompts["source"]["fit"][:4] + ["The committee met on Tuesday to review the budget."])
    with torch.no_grad():
        base = model(**batch).logits
        inside = []
        for lam in (0.5, 1.0):
            handles = [
                m.register_forward_hook(_numpy_map_hook(*reference[j], lam))
                for j, m in enumerate(dict(model.named_modules())[n] for n in names)
            ]
            try:
                expected = model(**batch).logits
            finally:
                for h in handles:
                    h.remove()
            with maps.apply(model, strength=lam):
                got = model(**batch).logits
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
            assert (got - base).abs().max() > 1e-2  # the maps do something
        capture = {}
        with lineas.attach(model, maps.sites, capture=capture):
            model(**batch)
        for k, site in enumerate(maps.sites):
            lo, hi = maps.bounds[k]
            inside.append(((lo < capture[site]) & (capture[site] < hi)).float().mean().item())
    # The clip is not vacuous: some token values lie outside the source's pooled range, some inside.
    assert 0.0 < min(inside) and max(inside) < 1.0


def test_source_bounds_are_quantiles_in_percent(rng):
    x = torch.from_numpy(rng.normal(size=(50, 3))).float()
    lo, hi = source_bounds(x, (0, 100))
    assert torch.equal(lo, x.min(0).values) and torch.equal(hi, x.max(0).values)
    lo, hi = source_bounds(x, (5, 95))
    np.testing.assert_allclose(lo.numpy(), np.quantile(x.numpy(), 0.05, axis=0), rtol=1e-5)
    np.testing.assert_allclose(hi.numpy(), np.quantile(x.numpy(), 0.95, axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="clip_quantiles"):
        source_bounds(x, (90, 10))


def test_unclipped_linear_act_merges_and_clip_is_refused_for_lineas(tiny_llama):
    dm = PromptPairDataModule(data_path("toxicity/toxic.txt"), data_path("tiny/polite.txt"), num_fit=16)
    maps = lineas.fit(
        tiny_llama,
        dm.prompts["source"]["fit"],
        dm.prompts["target"]["fit"],
        sites="mlp_out",
        estimator="linear_act",
        clip=False,
        steps=0,
        heldout_fraction=0.0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert not maps.clipped and maps.info["clip_quantiles"] is None
    with pytest.raises(ValueError, match="module.clip applies to the closed-form baselines"):
        lineas.LinEASModule(tiny_llama, sites="mlp_out", clip=True)


@pytest.mark.slow
@pytest.mark.usefixtures("all_threads")  # the real SmolLM2 weights: ~1 min
def test_linear_act_with_the_official_clip_keeps_perplexity_in_its_regime(tmp_path):
    # Without the clip, layer 11's massive first-token activation turns mean pooling into a length
    # signal and the per-token map adds ~+930 to ordinary tokens: perplexity in the thousands.
    # The default recipe's sites up to layer 11 (the incremental fit's cost grows with the depth of the last site).
    train(
        compose_cfg(
            "recipe=toxicity_smollm2",
            "estimator=linear_act",
            r"module.sites=['model\.layers\.([0-9]|1[01])\.mlp\.down_proj']",
            f"output_dir={tmp_path}",
            "trainer.enable_progress_bar=false",
            "callbacks.evaluate=null",
            "callbacks.export_merged=null",
            "callbacks.export_gguf=null",
        )
    )
    maps = lineas.load_maps(tmp_path / "maps")
    assert maps.clipped and len(maps.sites) == 12
    backbone = lineas.CausalLM(maps.info["base_model"])
    model, tok = backbone.model, backbone.tokenizer
    texts = read_prompts(data_path("neutral/wiki_dev.txt"))[:24]
    base = perplexity_with_se(model, tok, texts, progress=False)[0]
    with maps.apply(model, strength=1.0):
        clipped = perplexity_with_se(model, tok, texts, progress=False)[0]
    maps.bounds = [None] * len(maps.sites)
    with maps.apply(model, strength=1.0):
        unclipped = perplexity_with_se(model, tok, texts, progress=False)[0]
    print(f"\nLinear-AcT perplexity: base {base:.2f}, clipped {clipped:.2f}, unclipped {unclipped:.2f}")
    assert base < clipped < 1.8 * base
    assert unclipped > 10 * base
