"""PromptPairDataModule: the seeded fit / held-out split, its loaders, and too few prompts refused."""

from __future__ import annotations

import pytest

from lineas.datamodules import PromptFileError, PromptPairDataModule


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


def test_too_few_prompts(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("only one prompt\n")
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"prompt {i}" for i in range(8)))
    with pytest.raises(PromptFileError, match=r"source prompts .*one.txt.*at least 2"):
        PromptPairDataModule(one, many, heldout_fraction=0.0)
    with pytest.raises(PromptFileError, match="at least 2"):
        PromptPairDataModule(many, many, num_fit=7)  # 1 held out cannot be scored
