"""Steered generation: live maps vs a merged checkpoint (every position steered), seeding, the CLI."""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch
from hydra import compose, initialize_config_module
from transformers import AutoModelForCausalLM

import lineas
from lineas.cli.generate import run_generate as run
from lineas.cli.main import typed
from lineas.conf import register
from lineas.core.hooks import probe
from lineas.models.causal_lm import load_causal_lm as load_model
from lineas.tasks.configs import GenerateConfig, Sampling
from lineas.tasks.export import export
from lineas.tasks.generate import format_prompts, generate
from tests.helpers import random_maps, run_cli

SPEC = "tiny:llama"
PROMPTS = ["Hello there, how are you today?", "Shut up", "The weather is lovely and the sun is out."]
NEW = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny Llama, random mlp_out maps (omega = 1 + 0.3 randn, beta = 0.3 randn), saved and merged."""
    root = tmp_path_factory.mktemp("generate")
    model, tokenizer = load_model(SPEC)
    sites = lineas.resolve_sites(model, "mlp_out")
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    dims, _ = probe(model, sites, lambda: model(**enc))
    maps = random_maps(
        sites,
        dims,
        scale=0.3,
        generator=torch.Generator().manual_seed(0),
        info={"base_model": SPEC, "model_type": model.config.model_type},
    )
    maps.save(root / "maps")
    export(maps, root / "merged", strength=1.0)
    merged = AutoModelForCausalLM.from_pretrained(root / "merged", dtype=torch.float32).eval()
    return {"root": root, "model": model, "tokenizer": tokenizer, "maps": maps, "merged": merged}


def greedy_ids(model, tokenizer, maps=None, strength=None, **kwargs) -> torch.Tensor:
    """New token ids of greedy ``model.generate`` on the left-padded prompts (exactly NEW per prompt)."""
    saved, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = saved
    steer = maps.apply(model, strength=strength) if maps is not None else nullcontext()
    with steer, torch.no_grad():
        ids = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            pad_token_id=tokenizer.pad_token_id,
            **kwargs,
        )
    return ids[:, enc["input_ids"].shape[1] :]


def test_live_maps_generate_what_the_merged_checkpoint_generates(setup):
    model, tok, maps, merged = setup["model"], setup["tokenizer"], setup["maps"], setup["merged"]
    live = greedy_ids(model, tok, maps, 1.0)
    assert live.shape == (len(PROMPTS), NEW)
    # The merged weights steer every position by construction; with the KV cache, live hooks
    # steer the prompt at prefill and each new token as it is decoded: same tokens.
    assert torch.equal(live, greedy_ids(merged, tok)), (live, greedy_ids(merged, tok))
    # Non-vacuous: the maps change the continuation.
    base = greedy_ids(model, tok, maps, 0.0)
    assert not torch.equal(live, base)
    assert torch.equal(base, greedy_ids(model, tok))  # strength 0 is the base model
    # Without the cache every step recomputes (and steers) all positions again: same tokens.
    assert torch.equal(live, greedy_ids(model, tok, maps, 1.0, use_cache=False))
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed after each block
    # The generate() function: same text from live maps (strength 1) and the merged model.
    kw = dict(do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW, progress=False, batch_size=2)
    rows = generate(model, tok, PROMPTS, maps=maps, strengths=(0, 1), **kw)
    assert [(r["prompt"], r["strength"]) for r in rows] == [(p, s) for p in PROMPTS for s in (0.0, 1.0)]
    text_merged = [r["continuation"] for r in generate(merged, tok, PROMPTS, **kw)]
    assert [r["continuation"] for r in rows if r["strength"] == 1.0] == text_merged
    assert tok.padding_side == "right"  # restored


def test_strength_zero_samples_what_the_base_model_samples(setup):
    model, tok, maps = setup["model"], setup["tokenizer"], setup["maps"]
    kw = dict(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=NEW, progress=False)
    state = torch.random.get_rng_state()
    steered = generate(model, tok, PROMPTS, maps=maps, strengths=(0, 1), seed=123, **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is left alone
    base = generate(model, tok, PROMPTS, seed=123, **kw)
    at_zero = [r["continuation"] for r in steered if r["strength"] == 0.0]
    assert at_zero == [r["continuation"] for r in base]
    # ... and what plain transformers samples with that seed (one batch, left-padded).
    tok.padding_side = "left"
    try:
        enc = tok(PROMPTS, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = "right"
    torch.manual_seed(123)
    ids = model.generate(
        **enc, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=NEW, pad_token_id=tok.pad_token_id
    )
    assert at_zero == tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    # The seed matters (the comparison above is not vacuous).
    other = generate(model, tok, PROMPTS, seed=124, **kw)
    assert [r["continuation"] for r in other] != at_zero


def test_head_gets_contiguous_rows_during_generate_only(setup):
    """The workaround for F.linear on a strided slice: the head's input is contiguous inside generate()
    (at the first step transformers passes it ``hidden[:, -1:, :]``), and the pre-hook is gone after."""
    model, tok = setup["model"], setup["tokenizer"]
    head = model.get_output_embeddings()
    seen: list[bool] = []
    spy = head.register_forward_hook(lambda _, args, out: seen.append(args[0].is_contiguous()))
    try:
        generate(model, tok, PROMPTS, do_sample=False, max_new_tokens=3, progress=False)
        assert len(seen) == 3 and all(seen)
        assert not head._forward_pre_hooks
        seen.clear()
        model(**tok(PROMPTS[:2], return_tensors="pt", padding=True), logits_to_keep=1)
        assert seen == [False]  # transformers' own slice: what the workaround is for
    finally:
        spy.remove()


@pytest.mark.slow  # spawns a process
def test_cli_end_to_end(setup, tmp_path):
    root = setup["root"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out, tb = tmp_path / "gen.jsonl", tmp_path / "tb"
    proc = run_cli(
        "lineas.generate",
        f"maps={root / 'maps'}",
        f"prompts={prompts}",
        "strengths=[0,0.5,1]",
        "sampling.max_new_tokens=6",
        "sampling.batch_size=2",
        f"output={out}",
        f"tb_dir={tb}",
        "progress=false",
        "threads=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(PROMPTS) * 3
    assert [(r["prompt"], r["strength"]) for r in rows] == [(p, s) for p in PROMPTS for s in (0.0, 0.5, 1.0)]
    assert all(isinstance(r["continuation"], str) for r in rows)
    assert list(tb.glob("events.out.tfevents.*")), list(tb.iterdir())
    assert "[1] Hello there" in proc.stdout and "0.5 |" in proc.stdout
    assert not list(tmp_path.glob(".gen.jsonl.*"))  # no temporary file left


def test_model_route_on_a_merged_checkpoint(setup, tmp_path, capsys):
    """``model=FOLDER`` alone (in-process): one column, 'merged', the greedy text of live maps at 1."""
    root, tok = setup["root"], setup["tokenizer"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))
    register()
    with initialize_config_module("lineas.conf", version_base="1.3"):
        cfg = compose(
            "generate",
            overrides=[
                f"model={root / 'merged'}",
                f"prompts={prompts}",
                "sampling.do_sample=false",
                f"sampling.max_new_tokens={NEW}",
                f"output={tmp_path / 'g.jsonl'}",
                "progress=false",
            ],
        )
    rows = run(typed(cfg))
    assert [r["column"] for r in rows] == ["merged"] * len(PROMPTS) and rows[0]["strength"] == 1.0
    live = generate(
        setup["model"],
        tok,
        PROMPTS,
        maps=setup["maps"],
        strengths=(1.0,),
        do_sample=False,
        max_new_tokens=NEW,
        progress=False,
    )
    assert [r["continuation"] for r in rows] == [r["continuation"] for r in live]
    assert "merged |" in capsys.readouterr().out
    chat = format_prompts(tok, PROMPTS[:1], chat_template=True)[0]
    assert PROMPTS[0] in chat and chat.rstrip().endswith("<|im_start|>assistant")
    with initialize_config_module("lineas.conf", version_base="1.3"):
        cfg = compose("generate", overrides=[f"maps={root / 'maps'}", f"model={root / 'merged'}", f"prompts={prompts}"])
    with pytest.raises(lineas.ConfigError, match="already in its weights"):
        run(typed(cfg))


def test_generate_output_is_refused_unless_told_and_replaced_only_when_lineas_wrote_it(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hello there\n")
    mine = tmp_path / "generations.jsonl"
    mine.write_text("my own notes\n")
    common = dict(model="tiny:llama", prompts=str(prompts), output=str(mine), progress=False)
    with pytest.raises(lineas.LineasError, match="exists: choose another output, or replace it with overwrite=true"):
        run(GenerateConfig(**common))
    with pytest.raises(lineas.LineasError, match="not a file lineas wrote"):
        run(GenerateConfig(**common, overwrite=True))
    assert mine.read_text() == "my own notes\n"
    sampling = Sampling(max_new_tokens=2, do_sample=False)
    ours = tmp_path / "g.jsonl"
    run(GenerateConfig(**dict(common, output=str(ours)), sampling=sampling))
    run(GenerateConfig(**dict(common, output=str(ours)), sampling=sampling, overwrite=True))  # lineas wrote it
    assert [json.loads(line)["prompt"] for line in ours.read_text().splitlines()] == ["Hello there"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_a_gpu_is_one_line(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hello there\n")
    with pytest.raises(lineas.ConfigError, match="device=cuda: this machine has no such CUDA device"):
        run(GenerateConfig(model="tiny:llama", prompts=str(prompts), device="cuda", output=None))


def test_prompts_longer_than_the_context_are_one_line_naming_the_limit():
    model, tok = load_model("tiny:gpt2")
    with pytest.raises(lineas.ConfigError, match="prompt 2 is .* tokens.*context of 256 tokens"):
        generate(model, tok, ["short", "word " * 300], max_new_tokens=4, do_sample=False, progress=False)
    with pytest.raises(lineas.ConfigError, match=r"backbone.max_length=1000.*\(256 tokens\)"):
        lineas.CausalLM("tiny:gpt2", max_length=1000)
