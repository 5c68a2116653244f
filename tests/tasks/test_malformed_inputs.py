"""Property test (Hypothesis): generated malformed prompt files, maps folders and export calls end in a result or a
:class:`~lineas.core.errors.LineasError`, never another exception, and touch no file outside their output."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from lineas.core.errors import LineasError
from lineas.core.maps import AffineMaps, load_maps
from lineas.core.prompts import read_prompts
from lineas.tasks.export import export

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
FEW = settings(FAST, max_examples=10)  # some examples export (a model load each)
PIECES = [*"ab ,;\"'{}[]:\n\r\t\ufeff\u2028\x00\u00e9", "text", "null", '{"text": ', "text,id\n"]
TEXT = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 100) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
SITES = ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (skip is None or skip not in p.parents)
    }


@FAST
@given(suffix=st.sampled_from([".txt", ".jsonl", ".csv", "", ".TXT"]), body=TEXT | st.binary(max_size=80))
def test_prompt_reader_returns_prompts_or_one_error(suffix, body):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"prompts{suffix}"
        path.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
        before = snapshot(Path(tmp))
        try:
            prompts = read_prompts(path)
        except LineasError:
            prompts = None
        assert prompts is None or (prompts and all(isinstance(p, str) and p == p.strip() and p for p in prompts))
        assert snapshot(Path(tmp)) == before


def _maps_folder(folder: Path, meta_edit, tensors_edit) -> None:
    AffineMaps(SITES, [64, 64], info={"base_model": "tiny:llama", "model_type": "llama"}).save(folder)
    meta = json.loads((folder / "lineas.json").read_text())
    (folder / "lineas.json").write_text(json.dumps(meta_edit(meta)))
    if tensors_edit is not None:
        tensors_edit(folder / "maps.safetensors")


def _edit_key(key, value):
    return lambda meta: {**meta, key: value} if isinstance(meta, dict) else meta


def _edit_site(field, value):
    return lambda meta: {**meta, "sites": [{**meta["sites"][0], field: value}, *meta["sites"][1:]]}


META_EDITS = st.one_of(
    st.builds(_edit_key, st.sampled_from(["sites", "strength", "format", "base_model", "clipped"]), JSON),
    st.builds(_edit_site, st.sampled_from(["site", "dim"]), JSON),
    st.builds(lambda v: lambda meta: v, JSON),
    st.just(lambda meta: meta),
)


def _garble(data: bytes):
    return lambda path: path.write_bytes(data)


def _drop(n: int):
    def edit(path: Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(path)
        save_file({k: tensors[k] for k in sorted(tensors)[n:]} | {"other.omega": torch.ones(2)}, path)

    return edit


TENSOR_EDITS = st.one_of(st.none(), st.builds(_garble, st.binary(max_size=64)), st.builds(_drop, st.integers(0, 3)))


@FEW
@given(meta_edit=META_EDITS, tensors_edit=TENSOR_EDITS)
def test_maps_reader_and_export_return_a_result_or_one_error(meta_edit, tensors_edit):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _maps_folder(root / "maps", meta_edit, tensors_edit)
        (root / "notes.txt").write_text("keep")
        out = root / "out"
        before = snapshot(root)
        try:
            maps = load_maps(root / "maps")
        except LineasError:
            maps = None
        assert maps is None or isinstance(maps, AffineMaps)
        try:
            export(root / "maps", out, model="tiny:llama")
        except LineasError:
            assert not out.exists()
        else:
            assert (out / "lineas_merge.json").is_file() and (out / "model.safetensors").is_file()
        assert snapshot(root, skip=out) == before
        shutil.rmtree(out, ignore_errors=True)
