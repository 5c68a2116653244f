"""Sites: regex patterns over ``named_modules()`` (full match, ``:k`` items), in definition order."""

from __future__ import annotations

import pytest

from lineas import Site, SiteError
from lineas.core.sites import match_sites


def test_match_sites_orders_by_definition_and_dedups(tiny_llama):
    model = tiny_llama.model
    got = match_sites(
        model,
        [
            r"model\.layers\.1\.self_attn\.o_proj",
            r"model\.layers\.0\.mlp\.down_proj",
            r"model\.layers\.[01]\.mlp\.down_proj",
            r"model\.layers\.0\.input_layernorm:0",
        ],
    )
    assert got == [
        Site("model.layers.0.mlp.down_proj"),
        Site("model.layers.0.input_layernorm", 0),
        Site("model.layers.1.self_attn.o_proj"),
        Site("model.layers.1.mlp.down_proj"),
    ]
    # full match: a prefix does not match
    with pytest.raises(SiteError):
        match_sites(model, [r"model\.layers\.0\.mlp\.down"])


def test_pattern_matching_nothing_raises_with_real_names(tiny_llama):
    model = tiny_llama.model
    pattern = r"model\.layers\.\d+\.feed_forward\.w2"
    with pytest.raises(SiteError) as err:
        match_sites(model, [pattern])
    msg = str(err.value)
    assert repr(pattern) in msg  # the pattern as written, with its backslashes
    names = dict(model.named_modules())
    examples = msg.split("e.g. ", 1)[1].split(", ")
    assert len(examples) >= 5
    assert all(e in names for e in examples), examples
    assert any("layers." in e for e in examples)


def test_invalid_regex_raises_site_error(tiny_llama):
    with pytest.raises(SiteError, match="not a valid regex"):
        match_sites(tiny_llama.model, [r"model\.layers\.(\d+"])
