"""GGUF export checked with the real runtime: llama.cpp (through the cyllama wheel) runs the file as the steered
model; transformers' own GGUF loader reads it back."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM

import lineas
from lineas.core.files import data_path
from lineas.models.offline import GGUF_FILE, gguf_dir
from lineas.tasks.gguf import export_gguf
from tests.helpers import clipped_maps, random_maps_for, run_cli

# cyllama (llama.cpp compiled in) has a wheel for CPython 3.11 on x86-64 Linux only: elsewhere the runtime
# checks are skipped with this reason; here a missing cyllama is an error (it is in the `test` extra).
WHEEL_HERE = sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64" and sys.platform == "linux"
llama_cpp = pytest.mark.skipif(not WHEEL_HERE, reason="no cyllama wheel for this platform (cp311 x86-64 Linux)")
PROMPTS = lineas.read_prompts(data_path("toxicity/prompts.txt"))[:16]
NEW = 12


class LlamaCpp:
    """A GGUF file in llama.cpp: the next-token logits at every position of a token sequence."""

    def __init__(self, path) -> None:
        import cyllama.llama.llama_cpp as cpp

        class Model(cpp.LlamaModel):
            @property
            def n_vocab(self) -> int:  # cyllama 0.2.18's get_logits reads model.n_vocab, which it lacks
                return self.get_vocab().n_vocab

        cpp.disable_logging()
        self.cpp, self.model = cpp, Model(str(path), cpp.LlamaModelParams())
        self.params = cpp.LlamaContextParams()
        self.params.n_ctx = self.params.n_batch = 256
        self.params.n_threads = self.params.n_threads_batch = 1

    def logits(self, ids: list[int]) -> np.ndarray:
        ctx = self.cpp.LlamaContext(self.model, self.params)
        batch = self.cpp.LlamaBatch(n_tokens=len(ids), embd=0, n_seq_max=1)
        for i, t in enumerate(ids):
            batch.add(t, i, [0], True)
        ctx.decode(batch)
        return np.stack([np.asarray(ctx.get_logits_ith(i), dtype=np.float32) for i in range(len(ids))])


def transformers_run(model, tokenizer, maps, strength: float = 1.0) -> list[tuple[list[int], np.ndarray]]:
    """Per prompt: the prompt and its greedy continuation by the model steered live at ``strength``, and the
    model's next-token logits at the continuation's positions (``(NEW, vocab)``)."""
    rows = []
    for p in PROMPTS:
        ids = torch.tensor([tokenizer(p)["input_ids"]])
        with torch.no_grad(), maps.apply(model, strength=strength):
            seq = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=2)
            logits = model(seq).logits[0, ids.shape[1] - 1 : -1].numpy()
        rows.append((seq[0].tolist(), logits))
    return rows


def agreement(runtime: LlamaCpp, reference) -> dict[str, float]:
    """llama.cpp on the same sequences (teacher-forced): max |logit diff| and top-1 agreement over the
    continuations' positions."""
    diffs, same = [], []
    for seq, ref in reference:
        got = runtime.logits(seq)[len(seq) - NEW - 1 : -1]
        diffs.append(float(np.abs(got - ref).max()))
        same += (got.argmax(1) == ref.argmax(1)).tolist()
    return {"max_abs_diff": max(diffs), "top1": float(np.mean(same)), "positions": len(same)}


@pytest.mark.slow  # llama.cpp
@llama_cpp
@pytest.mark.parametrize("preset", ["mlp_out", "attn_in"])  # attn_in: shifts into q/k/v biases (rope row order)
def test_tiny_llama_gguf_runs_in_llama_cpp_as_the_steered_model(tiny_llama, tmp_path, preset):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    maps = random_maps_for(tiny_llama, preset, scale=0.3)
    out = export_gguf(maps, tmp_path / "gguf")
    steered = transformers_run(model, tok, maps)
    base = transformers_run(model, tok, maps, 0.0)  # strength 0: the base model
    got = agreement(LlamaCpp(out / "model.gguf"), steered)
    moved = max(float(np.abs(s[1][0] - b[1][0]).max()) for s, b in zip(steered, base))
    print(f"tiny llama {preset}: llama.cpp vs steered transformers {got}; maps move the logits by {moved:.3g}")
    assert moved > 1.0  # the maps change the model
    assert got["max_abs_diff"] < 0.05 and got["top1"] >= 0.97, got  # random weights: a few near-ties
    # transformers reads the file back (its Llama GGUF loader takes biases once the config flags ask for them)
    back = AutoModelForCausalLM.from_pretrained(
        out, gguf_file="model.gguf", dtype=torch.float32, mlp_bias=True, attention_bias=True
    )
    ids = torch.tensor([tok(PROMPTS[0])["input_ids"]])
    with torch.no_grad(), maps.apply(model):
        expected = model(ids).logits
    with torch.no_grad():
        back_diff = float((back(ids).logits - expected).abs().max())
    print(f"tiny llama {preset}: transformers' GGUF loader vs steered: max |diff| {back_diff:.3g}")
    assert back_diff < 1e-4


@llama_cpp
@pytest.mark.slow  # the floor the steered checks are read against; not a check of the merge itself
def test_gguf_of_an_unsteered_export_matches_llama_cpp_as_closely(tiny_llama, tmp_path):
    """The floor: the same runtime on the base model (strength 0) differs from transformers by as much."""
    maps = random_maps_for(tiny_llama, "mlp_out", scale=0.3)
    out = export_gguf(maps, tmp_path / "gguf", strength=0.0)
    base = transformers_run(tiny_llama.model, tiny_llama.tokenizer, maps, 0.0)
    got = agreement(LlamaCpp(out / "model.gguf"), base)
    print(f"tiny llama, strength 0: llama.cpp vs transformers {got}")
    assert got["max_abs_diff"] < 0.05 and got["top1"] >= 0.97, got  # random weights: a few near-ties


def test_refusals(tmp_path):
    gpt2 = lineas.CausalLM("tiny:gpt2")
    with pytest.raises(lineas.MergeError, match="GGUF export writes models of model_type llama; tiny:gpt2 is a gpt2"):
        export_gguf(random_maps_for(gpt2, "mlp_out"), tmp_path / "g1")
    with pytest.raises(lineas.MergeError, match="clipped"):
        export_gguf(clipped_maps(), tmp_path / "g2")
    (tmp_path / "g3").mkdir()
    (tmp_path / "g3" / "notes.txt").write_text("keep")  # an empty folder would be used as it is
    llama = lineas.CausalLM("tiny:llama")
    with pytest.raises(lineas.LineasError, match="overwrite=true"):
        export_gguf(random_maps_for(llama, "mlp_out"), tmp_path / "g3")
    with pytest.raises(lineas.MergeError, match="tensor_type 'q4_k'"):
        export_gguf(random_maps_for(llama, "mlp_out"), tmp_path / "g4", tensor_type="q4_k")
    assert not any((tmp_path / g).exists() for g in ("g1", "g2", "g4"))


@pytest.mark.slow  # a CLI run
def test_export_cli_format_gguf(tiny_llama, tmp_path):
    random_maps_for(tiny_llama, "mlp_out", scale=0.3).save(tmp_path / "maps")
    proc = run_cli(
        "lineas.export",
        f"maps={tmp_path / 'maps'}",
        f"output_dir={tmp_path / 'out'}",
        "format=gguf",
        "tensor_type=q8_0",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    reader = GGUFReader(tmp_path / "out" / "model.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["blk.0.ffn_down.bias"] == "F32"
    assert "lineas.maps" in reader.fields and "tokenizer.chat_template" in reader.fields


@llama_cpp
@pytest.mark.slow
@pytest.mark.usefixtures("all_threads")
def test_smollm2_gguf_keeps_the_base_quantisation_and_runs_as_the_steered_model(tmp_path):
    """From the default model's own GGUF: untouched tensors byte for byte, and llama.cpp agrees with transformers
    on the steered model as well as it does on the base model (the gap is the base's Q4_1 quantisation)."""
    backbone = lineas.CausalLM("offline:smollm2-135m-instruct")
    maps = random_maps_for(backbone, "mlp_out", scale=0.05)
    out = export_gguf(maps, tmp_path / "gguf")
    base_file = GGUFReader(gguf_dir() / GGUF_FILE)
    ours = {t.name: t for t in GGUFReader(out / "model.gguf").tensors}
    for t in base_file.tensors:
        if "ffn_down" in t.name:
            assert ours[t.name].tensor_type.name == "F32"
        else:
            assert ours[t.name].tensor_type == t.tensor_type and np.array_equal(ours[t.name].data, t.data)
    assert {n for n in ours if n.endswith("ffn_down.bias")} == {f"blk.{i}.ffn_down.bias" for i in range(30)}
    on_base = agreement(
        LlamaCpp(gguf_dir() / GGUF_FILE), transformers_run(backbone.model, backbone.tokenizer, maps, 0.0)
    )
    steered = agreement(LlamaCpp(out / "model.gguf"), transformers_run(backbone.model, backbone.tokenizer, maps))
    print(f"SmolLM2 Q4_1 base: llama.cpp vs transformers {on_base}; steered GGUF vs steered transformers {steered}")
    assert steered["top1"] >= on_base["top1"] - 0.03 and steered["max_abs_diff"] <= 1.5 * on_base["max_abs_diff"]
