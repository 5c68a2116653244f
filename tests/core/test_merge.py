"""Folding maps into weights (``merge_``), one fold rule at a time, in the style of torchtune's unit tests:
small modules with hand-set weights and hand-set maps; the merged weights against values computed here by
hand, and the merged module's output against the hooked one (``maps.apply``) at strengths 1 and 0.5.
Then what the merge refuses, on small modules and on the tiny random models."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from torch import nn
from transformers.models.gemma2.modeling_gemma2 import Gemma2RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.pytorch_utils import Conv1D

import lineas
from lineas import AffineMaps, MergeError
from lineas.core.merge import FoldRules, merge_, plan
from tests.helpers import random_maps_for

STRENGTHS = [1.0, 0.5]
OMEGA, BETA = [2.0, 0.5, 1.5], [0.25, -1.0, 0.5]  # the hand-set map of the 3-dim sites


class Toy(nn.Module):
    """Modules ``block.<name>`` (as in a decoder layer, where the fold rules name them) run by ``run(block, x)``;
    a ``config`` for the bias flags, as a transformers model has."""

    def __init__(self, run: Callable[[nn.Module, torch.Tensor], torch.Tensor], **modules: nn.Module) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type="toy")
        self.block = nn.Module()
        for name, module in modules.items():
            self.block.add_module(name, module)
        self.run = run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.block, x)


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 1, 2 * x


def set_(param: torch.Tensor, values: list) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(values))


def hand_maps(site: str, omega: list[float], beta: list[float]) -> AffineMaps:
    maps = AffineMaps([site], [len(omega)])
    set_(maps.omega[0], omega)
    set_(maps.beta[0], beta)
    return maps


def at_strength(omega: list[float], beta: list[float], lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The map's coefficients at strength ``lam``, by hand: ``w = 1 + lam*(omega - 1)``, ``b = lam*beta``."""
    return 1 + lam * (torch.tensor(omega) - 1), lam * torch.tensor(beta)


def merged_copy(model: Toy, maps: AffineMaps, rules: FoldRules, lam: float, x: torch.Tensor) -> Toy:
    """``maps`` merged at ``lam`` into a copy of ``model``, after checking that the maps change the output and
    that the merged copy's output is the hooked model's."""
    with torch.no_grad():
        base = model(x)
        with maps.apply(model, strength=lam):
            hooked = model(x)
        assert (hooked - base).abs().max() > 0.05, "the maps do not change the output: the check would be vacuous"
        merged = copy.deepcopy(model)
        merge_(merged, maps, rules, strength=lam)
        torch.testing.assert_close(merged(x), hooked, rtol=1e-5, atol=1e-5)
    assert maps.strength == 1.0 and torch.equal(model(x), base)  # the original is left alone
    return merged


# --- Linear, Conv1D, Conv2d: W' = diag(w) W, c' = w*c + b -----------------------------------------------
@pytest.mark.parametrize(
    "lam,weight,bias",
    [
        (1.0, [[0.2, 0.4, 0.6], [0.2, 0.25, 0.3]], [1.25, -1.25]),
        (0.5, [[0.15, 0.3, 0.45], [0.3, 0.375, 0.45]], [0.875, -0.875]),
    ],
    ids=["1.0", "0.5"],
)
def test_linear_scales_its_rows_and_takes_the_shift_in_its_bias(lam, weight, bias):
    # omega = (2, 0.5), beta = (0.25, -1); at 0.5: w = (1.5, 0.75), b = (0.125, -0.5)
    proj = nn.Linear(3, 2)
    set_(proj.weight, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    set_(proj.bias, [0.5, -0.5])
    model = Toy(lambda block, x: block.proj(x), proj=proj)
    maps = hand_maps("block.proj", [2.0, 0.5], [0.25, -1.0])
    assert plan(model, maps, FoldRules(), lam).folds == [(0, "linear")]
    merged = merged_copy(model, maps, FoldRules(), lam, torch.randn(4, 5, 3))
    torch.testing.assert_close(merged.block.proj.weight, torch.tensor(weight))
    torch.testing.assert_close(merged.block.proj.bias, torch.tensor(bias))


@pytest.mark.parametrize("lam", STRENGTHS)
def test_linear_without_bias_gets_one_through_its_config_flag(lam):
    weight = [[1.0, -1.0, 0.5], [0.0, 2.0, -0.5]]
    down, up = nn.Linear(3, 2, bias=False), nn.Linear(2, 3, bias=False)
    set_(down.weight, weight)
    set_(up.weight, [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    model = Toy(lambda block, x: block.up(block.down(x)), down=down, up=up)
    rules = FoldRules(bias_flags={"mlp_bias": ["down", "up"]})  # the flag gives both layers a bias
    maps = hand_maps("block.down", [1.5, 0.5], [0.3, -0.7])
    assert plan(model, maps, rules, lam).flags == ["mlp_bias"]
    merged = merged_copy(model, maps, rules, lam, torch.randn(4, 3))
    assert merged.config.mlp_bias is True and not hasattr(model.config, "mlp_bias")
    w, b = at_strength([1.5, 0.5], [0.3, -0.7], lam)
    torch.testing.assert_close(merged.block.down.weight, w[:, None] * torch.tensor(weight))
    torch.testing.assert_close(merged.block.down.bias, b)  # c' = w*0 + b
    assert torch.equal(merged.block.up.bias, torch.zeros(3))  # another layer of the flag: a zero bias
    assert torch.equal(merged.block.up.weight, up.weight)


@pytest.mark.parametrize("lam", STRENGTHS)
def test_conv1d_scales_its_columns(lam):
    # transformers' Conv1D (GPT-2): y = x W + c with W of shape (in, out)
    weight = [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]]
    proj = Conv1D(nf=2, nx=3)
    set_(proj.weight, weight)
    set_(proj.bias, [0.5, -0.5])
    model = Toy(lambda block, x: block.c_proj(x), c_proj=proj)
    maps = hand_maps("block.c_proj", [2.0, 0.5], [0.25, -1.0])
    merged = merged_copy(model, maps, FoldRules(), lam, torch.randn(4, 5, 3))
    w, b = at_strength([2.0, 0.5], [0.25, -1.0], lam)
    torch.testing.assert_close(merged.block.c_proj.weight, torch.tensor(weight) * w[None, :])
    torch.testing.assert_close(merged.block.c_proj.bias, w * torch.tensor([0.5, -0.5]) + b)


@pytest.mark.parametrize("lam", STRENGTHS)
def test_conv2d_scales_each_output_channel(lam):
    # A 4-D output: the maps act on channel axis 1, the fold on the output channels of the kernel.
    weight = torch.arange(24.0).view(3, 2, 2, 2) / 10 - 1.2
    conv = nn.Conv2d(2, 3, kernel_size=2)
    set_(conv.weight, weight.tolist())
    set_(conv.bias, [0.1, -0.2, 0.3])
    model = Toy(lambda block, x: block.conv(x), conv=conv)
    maps = hand_maps("block.conv", OMEGA, BETA)
    merged = merged_copy(model, maps, FoldRules(), lam, torch.randn(2, 2, 5, 5))
    w, b = at_strength(OMEGA, BETA, lam)
    torch.testing.assert_close(merged.block.conv.weight, w.view(3, 1, 1, 1) * weight)
    torch.testing.assert_close(merged.block.conv.bias, w * torch.tensor([0.1, -0.2, 0.3]) + b)


# --- LayerNorm, GroupNorm: gamma' = w*gamma, beta' = w*beta + b ------------------------------------------
@pytest.mark.parametrize("lam", STRENGTHS)
def test_layernorm_scales_gamma_and_shifts_beta(lam):
    gamma, beta = [1.0, 2.0, -0.5], [0.1, 0.0, -0.3]
    norm = nn.LayerNorm(3)
    set_(norm.weight, gamma)
    set_(norm.bias, beta)
    model = Toy(lambda block, x: block.norm(x), norm=norm)
    maps = hand_maps("block.norm", OMEGA, BETA)
    assert plan(model, maps, FoldRules(), lam).folds == [(0, "layernorm")]
    merged = merged_copy(model, maps, FoldRules(), lam, 2 * torch.randn(4, 5, 3) + 1)
    w, b = at_strength(OMEGA, BETA, lam)
    torch.testing.assert_close(merged.block.norm.weight, w * torch.tensor(gamma))
    torch.testing.assert_close(merged.block.norm.bias, w * torch.tensor(beta) + b)


@pytest.mark.parametrize("lam", STRENGTHS)
def test_groupnorm_scales_gamma_and_shifts_beta_per_channel(lam):
    gamma, beta = [1.0, 2.0, -0.5, 0.5], [0.1, 0.0, -0.3, 0.2]
    omega, shift = [2.0, 0.5, 1.5, 0.8], [0.25, -1.0, 0.5, 0.3]
    norm = nn.GroupNorm(2, 4)
    set_(norm.weight, gamma)
    set_(norm.bias, beta)
    model = Toy(lambda block, x: block.norm(x), norm=norm)
    maps = hand_maps("block.norm", omega, shift)
    merged = merged_copy(model, maps, FoldRules(), lam, torch.randn(2, 4, 3, 3))
    w, b = at_strength(omega, shift, lam)
    torch.testing.assert_close(merged.block.norm.weight, w * torch.tensor(gamma))
    torch.testing.assert_close(merged.block.norm.bias, w * torch.tensor(beta) + b)


# --- RMSNorm: g' = w*g; the shift to its Linear consumers, c' = c + W b -------------------------------------
def _norm_then_q_and_k(norm: nn.Module) -> Toy:
    """``norm`` read by two Linear layers: ``q`` with a bias, ``k`` without (as in attention)."""
    q, k = nn.Linear(3, 2), nn.Linear(3, 2, bias=False)
    set_(q.weight, [[0.1, 0.2, 0.3], [-0.4, 0.5, -0.6]])
    set_(q.bias, [0.05, -0.05])
    set_(k.weight, [[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]])

    def run(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        h = block.norm(x)
        return torch.cat([block.q(h), block.k(h)], -1)

    return Toy(run, norm=norm, q=q, k=k)


@pytest.mark.parametrize("lam", STRENGTHS)
def test_rmsnorm_scales_g_and_its_shift_goes_to_the_consumer_biases(lam):
    norm = LlamaRMSNorm(3)
    set_(norm.weight, [1.0, 2.0, 0.5])
    model = _norm_then_q_and_k(norm)
    rules = FoldRules(consumers={"norm": ["q", "k"]}, bias_flags={"attention_bias": ["q", "k"]})
    maps = hand_maps("block.norm", OMEGA, BETA)
    p = plan(model, maps, rules, lam)
    assert p.folds == [(0, "rmsnorm")] and p.flags == ["attention_bias"]  # k needs a bias for its share
    merged = merged_copy(model, maps, rules, lam, torch.randn(4, 5, 3))
    w, b = at_strength(OMEGA, BETA, lam)
    torch.testing.assert_close(merged.block.norm.weight, w * torch.tensor([1.0, 2.0, 0.5]))
    torch.testing.assert_close(merged.block.q.bias, torch.tensor([0.05, -0.05]) + model.block.q.weight @ b)
    torch.testing.assert_close(merged.block.k.bias, model.block.k.weight @ b)
    assert merged.config.attention_bias is True
    assert torch.equal(merged.block.q.weight, model.block.q.weight)  # the consumers' weights stay


@pytest.mark.parametrize("lam", STRENGTHS)
def test_rmsnorm_without_shift_needs_no_consumers(lam):
    norm = LlamaRMSNorm(3)
    set_(norm.weight, [1.0, 2.0, 0.5])
    model = _norm_then_q_and_k(norm)
    maps = hand_maps("block.norm", OMEGA, [0.0, 0.0, 0.0])
    merged = merged_copy(model, maps, FoldRules(), lam, torch.randn(4, 5, 3))
    w, _ = at_strength(OMEGA, [0.0] * 3, lam)
    torch.testing.assert_close(merged.block.norm.weight, w * torch.tensor([1.0, 2.0, 0.5]))
    assert torch.equal(merged.block.q.bias, model.block.q.bias) and merged.block.k.bias is None


@pytest.mark.parametrize("lam", STRENGTHS)
def test_gemma_rmsnorm_folds_its_one_plus_g_scale(lam):
    # Gemma scales by (1 + g): g' = w*(1 + g) - 1
    g = [0.0, 1.0, -0.5]
    norm = Gemma2RMSNorm(3)
    set_(norm.weight, g)
    model = _norm_then_q_and_k(norm)
    rules = FoldRules(consumers={"norm": ["q", "k"]}, bias_flags={"attention_bias": ["q", "k"]}, rmsnorm_offset=1.0)
    maps = hand_maps("block.norm", OMEGA, BETA)
    x = torch.randn(4, 5, 3)
    merged = merged_copy(model, maps, rules, lam, x)
    w, b = at_strength(OMEGA, BETA, lam)
    torch.testing.assert_close(merged.block.norm.weight, w * (1 + torch.tensor(g)) - 1)
    torch.testing.assert_close(merged.block.q.bias, torch.tensor([0.05, -0.05]) + model.block.q.weight @ b)
    # Not vacuous: the Llama form (offset 0) on a Gemma norm gives another output.
    llama_form = copy.deepcopy(model)
    merge_(llama_form, maps, FoldRules(rules.consumers, rules.bias_flags), strength=lam)
    with torch.no_grad():
        assert (llama_form(x) - merged(x)).abs().max() > 0.05


# --- refusals ------------------------------------------------------------------------------------------------
def test_refuses_a_shift_on_a_linear_without_bias_or_flag():
    proj = nn.Linear(3, 2, bias=False)
    set_(proj.weight, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    model = Toy(lambda block, x: block.proj(x), proj=proj)
    before = proj.weight.clone()
    with pytest.raises(MergeError, match=r"block\.proj.*module\.shift=false"):
        merge_(model, hand_maps("block.proj", [2.0, 0.5], [0.25, -1.0]), FoldRules())
    assert torch.equal(proj.weight, before) and proj.bias is None and vars(model.config) == {"model_type": "toy"}
    # Scale-only maps fold into the same Linear.
    merged = merged_copy(model, hand_maps("block.proj", [2.0, 0.5], [0.0, 0.0]), FoldRules(), 1.0, torch.randn(4, 3))
    torch.testing.assert_close(merged.block.proj.weight, torch.tensor([[0.2, 0.4, 0.6], [0.2, 0.25, 0.3]]))
    assert merged.block.proj.bias is None


def test_refuses_an_rmsnorm_shift_without_known_consumers():
    model = _norm_then_q_and_k(LlamaRMSNorm(3))
    with pytest.raises(MergeError, match=r"block\.norm.*RMSNorm's shift beta has no home"):
        merge_(model, hand_maps("block.norm", OMEGA, BETA), FoldRules())
    assert torch.equal(model.block.norm.weight, torch.ones(3)) and model.block.k.bias is None


def test_refuses_clipped_maps():
    proj = nn.Linear(3, 2)
    model = Toy(lambda block, x: block.proj(x), proj=proj)
    before = copy.deepcopy(proj.state_dict())
    maps = hand_maps("block.proj", [2.0, 0.5], [0.25, -1.0])
    plan(model, maps, FoldRules())  # unclipped, the map folds
    maps.clip_(0, torch.full((2,), -1.0), torch.full((2,), 1.0))
    with pytest.raises(MergeError, match=r"clipped.*module\.clip=false"):
        merge_(model, maps, FoldRules())
    assert all(torch.equal(v, before[k]) for k, v in proj.state_dict().items())


@pytest.mark.parametrize("site,kind", [("block.act", "GELU"), ("block.pair:1", "Pair")])
def test_refuses_a_site_that_is_not_a_linear_conv_or_norm_output(site, kind):
    # The foldable first site is left alone too: every site is checked before any weight changes.
    proj = nn.Linear(3, 3)
    model = Toy(lambda block, x: block.pair(block.act(block.proj(x)))[1], proj=proj, act=nn.GELU(), pair=Pair())
    before = copy.deepcopy(proj.state_dict())
    maps = AffineMaps(["block.proj", site], [3, 3])
    with torch.no_grad():
        maps.omega[0].fill_(2.0)
        maps.omega[1].fill_(0.5)
    with pytest.raises(MergeError, match=rf"site {site} \({kind}\) cannot be merged"):
        merge_(model, maps, FoldRules())
    assert all(torch.equal(v, before[k]) for k, v in proj.state_dict().items())


def test_refuses_maps_of_another_model():
    model = Toy(lambda block, x: block.proj(x), proj=nn.Linear(3, 2))
    with pytest.raises(MergeError, match=r"maps have 3 dims but block\.proj outputs 2"):
        merge_(model, hand_maps("block.proj", OMEGA, BETA), FoldRules())
    with pytest.raises(MergeError, match=r"block\.out: no such module"):
        merge_(model, hand_maps("block.out", [2.0, 0.5], [0.25, -1.0]), FoldRules())


def test_refuses_a_residual_stream_site():
    backbone = lineas.CausalLM("tiny:llama")
    sites = lineas.resolve_sites(backbone.model, [r"model\.layers\.1"])
    maps = lineas.AffineMaps(sites, [64])
    with pytest.raises(MergeError, match=r"model\.layers\.1 \(LlamaDecoderLayer\) cannot be merged.*mlp_out"):
        merge_(backbone.model, maps, lineas.fold_rules(backbone.model))


def test_refuses_a_shift_without_a_bias_home():
    backbone = lineas.CausalLM("tiny:mistral")
    maps = random_maps_for(backbone, "attn_in", scale=0.3)
    before = backbone.model.model.layers[0].input_layernorm.weight.clone()
    with pytest.raises(MergeError, match="module.shift=false"):
        merge_(backbone.model, maps, lineas.fold_rules(backbone.model))
    assert torch.equal(before, backbone.model.model.layers[0].input_layernorm.weight)  # nothing half-merged
