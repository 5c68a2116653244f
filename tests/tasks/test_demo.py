"""The demo page, driven in-process through Gradio's own client: what it samples against plain transformers,
several folders against the maps applied by hand, its export against live maps; what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lineas
from lineas.core.errors import ConfigError, MapsFileError
from lineas.core.maps import load_maps
from lineas.models.sources import resolve
from lineas.tasks.configs import DemoConfig, PipelineCall
from lineas.tasks.demo import bind_warning, build_app, load_demo, serve
from tests.helpers import random_maps_for, run_cli

gradio_client = pytest.importorskip("gradio_client", reason="the demo extra is not installed: pip install lineas[demo]")

SPEC = "tiny:llama"
PROMPT = "The weather is lovely and the sun is out."
TOKENS, TEMPERATURE, TOP_P, SEED = 10, 0.9, 0.95, 7


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Three maps folders on the tiny Llama: A and B both on mlp_out (order matters), C on attn_out."""
    root = tmp_path_factory.mktemp("demo")
    backbone = lineas.CausalLM(SPEC)
    out = {}
    for name, preset, seed in (("A", "mlp_out", 1), ("B", "mlp_out", 2), ("C", "attn_out", 3)):
        maps = random_maps_for(backbone, preset, scale=0.5, generator=torch.Generator().manual_seed(seed))
        out[name] = maps.save(root / name)
    return out


@pytest.fixture(scope="module")
def page(folders):
    """The page over [A, B, C], served on a free port, and a client of it."""
    cfg = DemoConfig(maps=[str(folders[k]) for k in "ABC"])
    app = build_app(load_demo(cfg), cfg)
    url = serve(app, block=False)
    client = gradio_client.Client(url, verbose=False)
    yield client
    client.close()
    app.close()


@pytest.fixture(scope="module")
def plain():
    """The tiny Llama as plain transformers loads it, and its tokenizer."""
    path = resolve(SPEC).path
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def page_text(client, strengths, seed=SEED) -> tuple[str, str]:
    return client.predict(PROMPT, *strengths, TOKENS, True, TEMPERATURE, TOP_P, seed, False, api_name="/generate")


def sampled(model, tokenizer, seed=SEED, steer=()) -> str:
    """What plain ``model.generate`` samples after ``torch.manual_seed(seed)``, inside the ``steer`` blocks."""
    enc = tokenizer([PROMPT], return_tensors="pt")
    with torch.no_grad(), torch.random.fork_rng():
        for block in steer:
            block.__enter__()
        try:
            torch.manual_seed(seed)
            ids = model.generate(
                **enc,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                max_new_tokens=TOKENS,
                pad_token_id=tokenizer.eos_token_id,
            )
        finally:
            for block in reversed(steer):
                block.__exit__(None, None, None)
    return tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_strength_zero_is_what_plain_transformers_samples(page, plain):
    model, tokenizer = plain
    base, steered = page_text(page, [0.0, 0.0, 0.0])
    reference = sampled(model, tokenizer)
    assert base == reference and steered == reference
    assert page_text(page, [0.0, 0.0, 0.0], seed=SEED + 1)[0] != reference  # the seed matters


def test_several_folders_compose_as_applying_each_in_turn(page, plain, folders):
    model, tokenizer = plain
    a, b = load_maps(folders["A"]), load_maps(folders["B"])
    base, steered = page_text(page, [0.8, 0.6, 0.0])
    by_hand = sampled(model, tokenizer, steer=[a.apply(model, strength=0.8), b.apply(model, strength=0.6)])
    assert steered == by_hand
    assert steered != base
    # A and B map the same sites: the other order is another model (the folders' order is honoured).
    swapped = sampled(model, tokenizer, steer=[b.apply(model, strength=0.6), a.apply(model, strength=0.8)])
    assert swapped != by_hand


@pytest.mark.slow  # a page of its own: ~15 s of CPU
def test_a_gated_folder_shades_the_steered_text_by_its_gate(folders, tmp_path):
    from lineas.core.gate import Gate
    from lineas.tasks.gate import token_gates

    maps = load_maps(folders["A"])
    maps.gate = Gate(maps.sites, maps.dims, 2)
    g = torch.Generator().manual_seed(5)
    for i in (0, 2):
        d = maps.dims[i]
        maps.gate.set_probe(
            i,
            torch.zeros(d),
            torch.randn(2, d, generator=g),
            torch.ones(2),
            torch.randn(2, generator=g),
            torch.zeros(1),
        )
    gated = maps.save(tmp_path / "gated")
    cfg = DemoConfig(maps=str(gated))
    demo = load_demo(cfg)
    app = build_app(demo, cfg)
    client = gradio_client.Client(serve(app, block=False), verbose=False)
    try:
        _, steered, shading = client.predict(
            PROMPT, 0.6, TOKENS, True, TEMPERATURE, TOP_P, SEED, False, api_name="/generate"
        )
    finally:
        client.close()
        app.close()
    model, tokenizer = demo.model, demo.tokenizer
    direct = token_gates(model, tokenizer, PROMPT + steered, demo.gates, demo.stack.maps[0].apply(model, 0.6))
    assert [(t["token"], pytest.approx(t["class_or_confidence"])) for t in shading] == direct
    values = [v for _, v in direct]
    assert len(direct) > TOKENS and min(values) < max(values)  # the prompt's and the continuation's tokens


@pytest.mark.slow  # two merged folders and a GGUF file: ~25 s of CPU
def test_export_writes_a_checkpoint_plain_transformers_loads(page, plain, folders, tmp_path):
    model, tokenizer = plain
    out = tmp_path / "exported"
    report = page.predict(str(out), False, True, 0.7, 0.0, 0.4, api_name="/export")
    assert str(out.resolve()) in report and "python -c" in report
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    enc = tokenizer([PROMPT, "Shut up"], return_tensors="pt", padding=True)
    a, c = load_maps(folders["A"]), load_maps(folders["C"])
    with torch.no_grad(), a.apply(model, strength=0.7), c.apply(model, strength=0.4):
        live = model(**enc).logits
    with torch.no_grad():
        folded = merged(**enc).logits
        base = model(**enc).logits
    assert torch.allclose(folded, live, atol=1e-4), (folded - live).abs().max()
    assert (live - base).abs().max() > 1e-2  # the maps change the logits
    assert (out / "gguf" / "model.gguf").stat().st_size > 0
    record = json.loads((out / "merged" / "lineas_merge.json").read_text())
    assert [p["strength"] for p in record["maps_info"]["stacked"]] == [0.7, 0.0, 0.4]
    # No overwrite unless asked; then the folder is replaced.
    with pytest.raises(Exception, match="exists; pass overwrite=true"):
        page.predict(str(out), False, False, 0.7, 0.0, 0.4, api_name="/export")
    page.predict(str(out), True, False, 0.0, 0.0, 1.0, api_name="/export")
    assert not (out / "gguf").exists()


def test_export_refuses_folders_on_one_site(page, tmp_path):
    with pytest.raises(Exception, match=r"both map site model\.layers\.0\.mlp\.down_proj"):
        page.predict(str(tmp_path / "x"), False, False, 0.5, 0.5, 0.0, api_name="/export")
    assert not (tmp_path / "x").exists()


def test_export_commands_of_one_folder(folders, tmp_path):
    cfg = DemoConfig(maps=str(folders["C"]))
    demo = load_demo(cfg)
    from lineas.tasks.stacked import export_commands

    lines = export_commands(demo.stack, [0.25], tmp_path / "o", overwrite=False, gguf=True)
    assert lines == [
        f"python -m lineas.export maps={folders['C']} strength=0.25 output_dir={tmp_path / 'o' / 'merged'}",
        f"python -m lineas.export maps={folders['C']} strength=0.25 format=gguf output_dir={tmp_path / 'o' / 'gguf'}",
    ]


def test_bad_folders_are_refused_in_one_line(folders, tmp_path):
    with pytest.raises(MapsFileError, match="no lineas.json"):
        load_demo(DemoConfig(maps=str(tmp_path)))
    other = load_maps(folders["C"])
    other.info["base_model"] = "tiny:qwen2"
    other.save(tmp_path / "other")
    with pytest.raises(ConfigError, match="fitted on different base models"):
        load_demo(DemoConfig(maps=[str(folders["A"]), str(tmp_path / "other")]))


def test_bind_warning():
    assert bind_warning("127.0.0.1") is None
    assert "0.0.0.0" in bind_warning("0.0.0.0")


@pytest.mark.slow  # seven pipeline calls and a second page: ~15 s of CPU
def test_image_page_matches_the_pipeline_steered_by_hand(tmp_path):
    from lineas.tasks.images import render_rows

    pipe = lineas.DiffusionPipe("tiny:sd")
    maps = random_maps_for(pipe, "norms", scale=0.5, generator=torch.Generator().manual_seed(4))
    folder = maps.save(tmp_path / "sd")
    cfg = DemoConfig(maps=str(folder), pipeline=PipelineCall(num_inference_steps=2))
    demo = load_demo(cfg)
    app = build_app(demo, cfg)
    client = gradio_client.Client(serve(app, block=False), verbose=False)
    try:
        shown = client.predict("a fox in the snow", 0.5, 3, 2, None, api_name="/generate")
    finally:
        client.close()
        app.close()
    from PIL import Image

    base, steered, strip = (np.asarray(Image.open(path).convert("RGB")) for path in shown)
    call = {**resolve("tiny:sd").pipeline_settings, "num_inference_steps": 2}
    rows = [("a fox in the snow", 3)]
    by_hand = render_rows(pipe.pipe, rows, maps, (0.0, 0.5, 1.0), **call)[:, 0]
    k = base.shape[0] // by_hand.shape[1]
    as_shown = (by_hand.clip(0, 1) * 255).round().astype(np.uint8).repeat(k, 1).repeat(k, 2)
    assert np.array_equal(base, as_shown[0]) and np.array_equal(steered, as_shown[1])
    assert not np.array_equal(base, steered)
    assert strip.shape[1] > 4 * base.shape[1]  # five images in a row


@pytest.mark.slow
def test_cli_prints_a_bad_folder_in_one_line(tmp_path):
    proc = run_cli("lineas.demo", f"maps={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"lineas.demo: {tmp_path}: no lineas.json; a maps folder holds lineas.json and maps.safetensors"
    ]
