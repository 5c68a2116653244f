"""Forward hooks that apply maps at sites (``attach``): tuple items, the channel axis, dtypes, clean-up."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

import lineas
from lineas import AffineMaps, Site, SiteError, resolve_sites
from tests.helpers import random_maps


# --- small modules ----------------------------------------------------------------------------
class Pair(nn.Module):
    def forward(self, x):
        return x + 1, 2 * x


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair()

    def forward(self, x):
        a, b = self.pair(x)
        return a * b  # both items reach the output


def test_hook_maps_one_item_of_a_tuple_output():
    net = TupleNet()
    x = torch.randn(2, 5, 4)
    maps = random_maps(["pair:1"], [4])
    w, b = maps.omega[0].detach(), maps.beta[0].detach()
    capture: dict = {}
    with lineas.attach(net, maps.sites, maps, capture):
        out = net(x)
        first, second = net.pair(x)
    torch.testing.assert_close(second, (2 * x) * w + b)
    assert torch.equal(first, x + 1)  # item 0 untouched
    torch.testing.assert_close(out, (x + 1) * ((2 * x) * w + b))
    assert torch.equal(capture[Site("pair", 1)], second)
    assert torch.equal(net(x), (x + 1) * (2 * x))  # hooks gone


def test_hook_on_a_tuple_without_index_raises_site_error():
    net = TupleNet()
    maps = AffineMaps(["pair"], [4])
    with pytest.raises(SiteError, match=r"pair:k"):
        with maps.apply(net):
            net(torch.randn(2, 4))


class _Wrap(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("shape", [(6, 5), (2, 7, 5), (3, 5, 4, 2)])
def test_hook_maps_the_channel_axis(shape):
    net = _Wrap(nn.Identity())
    maps = random_maps(["inner"], [5])
    x = torch.randn(*shape)
    w, b = maps.omega[0].detach(), maps.beta[0].detach()
    with maps.apply(net):
        out = net(x)
    expected = torch.empty_like(x)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in shape]).tolist():
        c = idx[1] if len(shape) == 4 else idx[-1]  # channels of a 4-D feature map, else the last axis
        expected[tuple(idx)] = x[tuple(idx)] * w[c] + b[c]
    torch.testing.assert_close(out, expected)


def test_hook_on_bf16_output_stays_bf16_with_float32_maps_and_grads():
    torch.manual_seed(0)
    net = _Wrap(nn.Linear(8, 8).to(torch.bfloat16))
    x = torch.randn(3, 4, 8, dtype=torch.bfloat16)
    base = net(x).detach()
    maps = random_maps(["inner"], [8], scale=0.5)
    with maps.apply(net):
        out = net(x)
    assert out.dtype == torch.bfloat16
    w, b = maps.omega[0].detach(), maps.beta[0].detach()
    assert torch.equal(out.detach(), (base.float() * w + b).to(torch.bfloat16))
    out.float().pow(2).sum().backward()
    for p in (maps.omega[0], maps.beta[0]):
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
        assert p.grad.abs().sum() > 0
    # the frozen module gets no maps' dtype leaking into its weights
    assert net.inner.weight.dtype == torch.bfloat16


def test_capture_of_a_mapped_bf16_site_is_the_float32_map_output():
    """The loss sees the map's float32 output; the model goes on with that value rounded to bfloat16."""
    torch.manual_seed(0)
    net = _Wrap(nn.Linear(8, 8).to(torch.bfloat16))
    x = torch.randn(3, 4, 8, dtype=torch.bfloat16)
    base = net(x).detach()
    maps = random_maps(["inner"], [8], scale=0.5)
    capture: dict = {}
    with lineas.attach(net, maps.sites, maps, capture):
        out = net(x)
    got = capture[maps.sites[0]]
    w, b = maps.omega[0].detach(), maps.beta[0].detach()
    assert got.dtype == torch.float32 and out.dtype == torch.bfloat16
    torch.testing.assert_close(got.detach(), base.double().mul(w.double()).add(b.double()).float(), rtol=2e-7, atol=0)
    assert torch.equal(out.detach(), got.detach().to(torch.bfloat16))
    assert not torch.equal(got.detach(), got.detach().to(torch.bfloat16).float())  # bfloat16 would round it


def test_hooks_removed_after_exception_in_block():
    net = _Wrap(nn.Identity())
    maps = random_maps(["inner"], [3])
    with pytest.raises(RuntimeError, match="boom"):
        with maps.apply(net):
            raise RuntimeError("boom")
    x = torch.randn(2, 3)
    assert torch.equal(net(x), x)
    assert not net.inner._forward_hooks


def test_attach_unknown_module_raises():
    net = _Wrap(nn.Identity())
    with pytest.raises(SiteError, match="nothere"):
        with AffineMaps(["nothere"], [3]).apply(net):
            pass


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_index_on_a_tensor_output_raises_site_error():
    net = _Wrap(nn.Linear(3, 3))
    with pytest.raises(SiteError):
        with AffineMaps(["inner:0"], [3]).apply(net):
            net(torch.randn(2, 5, 3))


def test_hook_maps_one_item_of_a_namedtuple_output():
    NT = namedtuple("NT", "a b")

    class NTOut(nn.Module):
        def forward(self, x):
            return NT(x, 2 * x)

    net = _Wrap(NTOut())
    maps = random_maps(["inner:1"], [3])
    x = torch.randn(2, 3)
    with maps.apply(net):
        out = net(x)
    assert isinstance(out, NT)
    torch.testing.assert_close(out.b, 2 * x * maps.omega[0].detach() + maps.beta[0].detach())


# --- on the tiny Llama ------------------------------------------------------------------------
def test_first_site_sees_the_mapped_base_output_on_tiny_llama(tiny_llama, source_batch, no_hooks_left):
    # Nothing upstream of the first site depends on the maps: its mapped output = transform(base output).
    model = tiny_llama.model
    no_hooks_left(model)
    sites = resolve_sites(model, "mlp_out")
    maps = random_maps(sites, [64] * 4)
    base: dict = {}
    steered: dict = {}
    with torch.no_grad():
        with lineas.attach(model, sites, capture=base):
            tiny_llama.forward(source_batch)
        with lineas.attach(model, sites, maps, capture=steered):
            tiny_llama.forward(source_batch)
    w, b = maps.omega[0].detach(), maps.beta[0].detach()
    torch.testing.assert_close(steered[sites[0]], base[sites[0]] * w + b)
    for s in sites[1:]:  # downstream sites do see the upstream maps
        assert not torch.allclose(
            steered[s], base[s] * maps.omega[sites.index(s)].detach() + maps.beta[sites.index(s)].detach()
        )


class MaybePair(nn.Module):
    def forward(self, x):
        return x, None  # like a self-attention layer that does not return its weights


@pytest.mark.parametrize(("index", "what"), [(1, "holds NoneType at item 1"), (5, "has no item 5")])
def test_a_tuple_item_that_is_not_a_tensor_names_the_tensor_items(index, what):
    net = nn.Sequential(MaybePair())
    with pytest.raises(SiteError, match=rf"{what}; its tensor items are \[0\]: write '0:k'"):
        with lineas.attach(net, [Site("0", index)], capture={}):
            net(torch.randn(2, 3))


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 5, 3)])
def test_a_site_that_fires_twice_is_captured_last_or_accumulated_along_the_features(shape):
    lin = nn.Linear(3, 3) if len(shape) == 3 else nn.Conv2d(3, 3, 1)
    site = Site(module="0")
    net = nn.Sequential(lin)
    first, second = torch.randn(shape), torch.randn(shape)
    for accumulate in (False, True):
        capture: dict = {}
        with torch.no_grad(), lineas.attach(net, [site], capture=capture, accumulate=accumulate):
            outs = [net(first), net(second)]
        axis = 1 if len(shape) == 4 else -1
        expected = torch.cat(outs, axis) if accumulate else outs[1]
        torch.testing.assert_close(capture[site], expected, rtol=0, atol=0)
