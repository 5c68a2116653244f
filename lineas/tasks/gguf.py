"""Merged checkpoints as GGUF files: llama.cpp (and Ollama, LM Studio) run them as ordinary models.

The maps are folded into the weights in ``transformers`` (:func:`lineas.core.merge.merge_`), then written
with llama.cpp's names and layout (q/k rows in its rope order). Two sources:

- a base that came from a GGUF file (the default model, ``offline:smollm2-135m-instruct``): its metadata and
  every tensor the merge does not touch are copied as they are, quantisation included; the touched tensors
  and the new biases are written in ``tensor_type`` (``f32``, the default, ``f16`` or ``q8_0``; 1-D tensors
  always F32);
- a ``transformers`` folder: the converter writes the architecture's metadata from its config and every
  tensor in ``tensor_type``; the tokenizer's metadata is that of the SmolLM2 GGUF, so the folder's tokenizer
  must be SmolLM2's (``tiny:*`` models, SmolLM2 folders). Other tokenizers are refused.

Llama-family models only (``model_type`` llama: Llama, SmolLM2). llama.cpp's Llama loads the optional bias
tensors (``blk.N.ffn_down.bias``, ``blk.N.attn_q.bias``, ...), which is where the shifts go.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from lineas.core.errors import MergeError
from lineas.core.maps import AffineMaps, check_strength
from lineas.core.merge import MergePlan, merge_
from lineas.models.causal_lm import load_causal_lm
from lineas.models.families import FAMILIES, check_fitted_on, fold_rules
from lineas.models.family import GGUFNames
from lineas.models.offline import GGUF_FILE, gguf_dir
from lineas.models.sources import resolve
from lineas.tasks.export import export_output, mergeable, write_merge_record

GGUF_NAME = "model.gguf"
TENSOR_TYPES = ("f32", "f16", "q8_0")


def gguf_name(hf_name: str, names: GGUFNames) -> str:
    """llama.cpp's name of a parameter (``model.layers.3.mlp.down_proj.bias`` -> ``blk.3.ffn_down.bias``)."""
    name = names.name(hf_name)
    if name is None:
        raise MergeError(f"{hf_name}: no GGUF name for this parameter")
    return name


def gguf_layout(hf_name: str, t: torch.Tensor, config: Any) -> np.ndarray:
    """A parameter as llama.cpp stores it: q/k rows (weights and biases) permuted to its rope order."""
    x = t.detach().float().cpu().numpy()
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    proj = hf_name.rsplit(".", 2)[-2]
    if proj in heads:
        n = heads[proj]
        x = x.reshape(n, 2, x.shape[0] // n // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
    return np.ascontiguousarray(x)


def touched(model: nn.Module, maps: AffineMaps, plan: MergePlan) -> list[str]:
    """The parameters the merge changed or created (not the zero biases a config flag adds elsewhere)."""
    params = dict(model.named_parameters())
    names: list[str] = []
    for i, kind in plan.folds:
        site = maps.sites[i].module
        names.append(f"{site}.weight")
        if kind in ("linear", "layernorm") and f"{site}.bias" in params:
            names.append(f"{site}.bias")
        if kind == "rmsnorm" and bool(maps.beta[i].detach().abs().max() > 0):
            names += [f"{c}.bias" for c in fold_rules(model).consumers_of(maps.sites[i])]
    return [n for n in dict.fromkeys(names) if n in params]  # no bias was made where the shift is 0


def export_gguf(
    maps: str | Path | AffineMaps,
    output_dir: str | Path,
    strength: float = 1.0,
    model: str | None = None,
    overwrite: bool = False,
    tensor_type: str = "f32",
    ungated: bool = False,
) -> Path:
    """Fold ``maps`` at ``strength`` into their base model and write ``output_dir/model.gguf`` (and the record).

    A maps folder with a per-token gate is refused unless ``ungated`` (its maps are then exported without it)."""
    output_dir, strength = Path(output_dir), check_strength(strength)
    if tensor_type not in TENSOR_TYPES:
        raise MergeError(f"tensor_type {tensor_type!r}: choose one of {', '.join(TENSOR_TYPES)}")
    claim = export_output(output_dir, maps, overwrite)
    claim.check()  # refused before any model loads
    maps, spec = mergeable(maps, model, ungated)
    base, tokenizer = load_causal_lm(spec, torch.float32)
    check_fitted_on(maps.info, base, spec)
    family = FAMILIES.get(base.config.model_type)
    if family is None or family.gguf is None:
        written = ", ".join(sorted(t for t, f in FAMILIES.items() if f.gguf is not None))
        raise MergeError(
            f"GGUF export writes models of model_type {written}; {spec} is a {base.config.model_type} model: "
            "export the transformers folder instead (format=transformers)"
        )
    plan = merge_(base, maps, fold_rules(base), strength)
    params = dict(base.named_parameters())
    changed = {gguf_name(n, family.gguf): gguf_layout(n, params[n], base.config) for n in touched(base, maps, plan)}
    provenance = {
        "lineas.base_model": spec,
        "lineas.strength": float(strength),
        "lineas.maps": json.dumps({"sites": [str(s) for s in maps.sites], **maps.info}),
    }
    source = resolve(spec).gguf
    with claim, claim.writing() as tmp:
        if source is not None:
            from gguf import GGUFReader

            reader = GGUFReader(source)  # parsing its fields (the 49k-token vocabulary) is the slow part: once
            tensors = _from_gguf(reader, changed, tensor_type)
            metadata = _gguf_metadata(reader)
        else:
            full = {
                gguf_name(n, family.gguf): gguf_layout(n, p, base.config)
                for n, p in params.items()
                if not (n == "lm_head.weight" and base.config.tie_word_embeddings)
            }
            tensors = ((name, *_typed(x, tensor_type)) for name, x in full.items())
            metadata = _hf_metadata(base.config, tokenizer)
        _write(tmp / GGUF_NAME, metadata, provenance, tensors)
        write_merge_record(
            tmp, spec, strength, maps, format="gguf", tensors_written=sorted(changed), tensor_type=tensor_type
        )
    return output_dir


def _typed(x: np.ndarray, tensor_type: str) -> tuple[np.ndarray, Any]:
    """``(data, raw_dtype)`` of a tensor in ``tensor_type`` (vectors, and matrices q8_0 cannot hold, in F32)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if x.ndim == 1 or tensor_type == "f32" or (tensor_type == "q8_0" and x.shape[-1] % 32):
        return x.astype(np.float32), None
    if tensor_type == "f16":
        return x.astype(np.float16), None
    return quantize(x.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0


def _from_gguf(reader: Any, changed: dict[str, np.ndarray], tensor_type: str) -> Iterator[tuple[str, np.ndarray, Any]]:
    """The base file's tensors (a ``GGUFReader``), those in ``changed`` replaced, the new ones (biases) appended."""
    seen = set()
    for t in reader.tensors:
        seen.add(t.name)
        if t.name in changed:
            yield t.name, *_typed(changed[t.name], tensor_type)
        else:
            yield t.name, t.data, t.tensor_type
    for name in changed.keys() - seen:
        yield name, *_typed(changed[name], tensor_type)


def _gguf_metadata(reader: Any, prefix: str = "") -> list[tuple[str, Any, Any, Any]]:
    """``(key, value, type, sub_type)`` of every field of a GGUF file (a ``GGUFReader``) starting with ``prefix``."""
    from gguf import GGUFValueType, Keys

    out = []
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == Keys.General.ARCHITECTURE:
            continue
        if field.name.startswith(prefix):
            kind = field.types[0]
            sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
            out.append((field.name, field.contents(), kind, sub))
    return out


def _hf_metadata(config: Any, tokenizer: Any) -> list[tuple[str, Any, Any, Any]]:
    """Llama metadata from a ``transformers`` config, and the SmolLM2 tokenizer's (refused for another)."""
    from gguf import GGUFValueType as T
    from transformers import AutoTokenizer

    from lineas.models.offline import smollm2_tokenizer_dir

    if tokenizer.get_vocab() != AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()).get_vocab():
        raise MergeError(
            "GGUF export from a transformers folder knows the SmolLM2 tokenizer only; this model has "
            "another: convert its base to GGUF with llama.cpp's convert_hf_to_gguf.py, or export the "
            "transformers folder (format=transformers)"
        )
    rope = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    u32 = [
        ("context_length", config.max_position_embeddings),
        ("embedding_length", config.hidden_size),
        ("block_count", config.num_hidden_layers),
        ("feed_forward_length", config.intermediate_size),
        ("attention.head_count", config.num_attention_heads),
        ("attention.head_count_kv", config.num_key_value_heads),
        ("vocab_size", config.vocab_size),
        ("rope.dimension_count", head_dim),
    ]
    out = [(f"llama.{k}", int(v), T.UINT32, None) for k, v in u32]
    out += [
        ("llama.rope.freq_base", float(rope or 10000.0), T.FLOAT32, None),
        ("llama.attention.layer_norm_rms_epsilon", float(config.rms_norm_eps), T.FLOAT32, None),
        ("general.name", getattr(config, "name_or_path", "") or "lineas model", T.STRING, None),
    ]
    from gguf import GGUFReader

    return out + _gguf_metadata(GGUFReader(gguf_dir() / GGUF_FILE), prefix="tokenizer.")


def _write(
    path: Path,
    metadata: list[tuple[str, Any, Any, Any]],
    provenance: dict[str, Any],
    tensors: Iterator[tuple[str, np.ndarray, Any]],
) -> None:
    import logging

    from gguf import GGUFValueType as T
    from gguf import GGUFWriter

    logging.getLogger("gguf").setLevel(logging.WARNING)  # its per-file info lines are not ours to print
    writer = GGUFWriter(path, "llama")
    for key, value, kind, sub in metadata:
        writer.add_key_value(key, value, kind, sub_type=sub)
    for key, value in provenance.items():
        writer.add_key_value(key, value, T.FLOAT32 if isinstance(value, float) else T.STRING)
    for name, data, raw in tensors:
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
