"""Prompt files and the fit / held-out split."""

from __future__ import annotations

import json

from lineas.datamodules import PromptPairDataModule, read_prompts


def test_three_file_formats_read_the_same_prompts(tmp_path):
    prompts = ["first prompt", "second, with a comma", 'third "quoted"']
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n\n")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"id": i, "text": p}) for i, p in enumerate(prompts)))
    with open(tmp_path / "p.csv", "w", newline="") as f:
        import csv

        w = csv.writer(f)
        w.writerow(["id", "sentence"])
        w.writerows(enumerate(prompts))
    assert read_prompts(tmp_path / "p.txt") == prompts
    assert read_prompts(tmp_path / "p.jsonl") == prompts
    assert read_prompts(tmp_path / "p.csv", field="sentence") == prompts


def test_split_is_seeded_disjoint_and_sized():
    source = [f"s{i}" for i in range(20)]
    target = [f"t{i}" for i in range(12)]
    a = PromptPairDataModule(source, target, num_fit=8, seed=1)
    b = PromptPairDataModule(source, target, num_fit=8, seed=1)
    c = PromptPairDataModule(source, target, num_fit=8, seed=2)
    assert a.prompts == b.prompts
    assert a.prompts["source"]["fit"] != c.prompts["source"]["fit"]
    for side, full in (("source", source), ("target", target)):
        fit, held = a.prompts[side]["fit"], a.prompts[side]["heldout"]
        assert len(fit) == 8 and sorted(fit + held) == sorted(full)
    d = PromptPairDataModule(source, target, heldout_fraction=0.25)
    assert len(d.prompts["source"]["heldout"]) == 5 and len(d.prompts["target"]["heldout"]) == 3


def test_loaders_batch_and_collate():
    dm = PromptPairDataModule([f"s{i}" for i in range(10)], [f"t{i}" for i in range(10)], num_fit=6,
                              collate_fn=lambda xs: {"n": len(xs), "xs": xs}, batch_size=4)
    sizes = [b["n"] for b in dm.train_dataloader()]
    assert sizes == [4, 2]
    held = [x for b in dm.val_dataloader() for x in b["xs"]]
    assert held == dm.prompts["source"]["heldout"]
    assert [x for b in dm.target_dataloader("fit") for x in b["xs"]] == dm.prompts["target"]["fit"]
