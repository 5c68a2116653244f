"""PromptPairDataModule: the seeded fit / held-out split, its loaders (resumable at any step), and too few
prompts refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import RandomSampler

from lineas.core.errors import ConfigError
from lineas.datamodules import PromptFileError, PromptPairDataModule
from lineas.datamodules.prompt_pair import PromptStream


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
    dm = PromptPairDataModule(
        [f"s{i}" for i in range(10)],
        [f"t{i}" for i in range(10)],
        num_fit=6,
        collate_fn=lambda xs: {"n": len(xs), "xs": xs},
        batch_size=4,
    )
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


@pytest.mark.parametrize(("n", "count"), [(24, 800), (7, 5), (10, 10), (24, 77)])
def test_prompt_stream_is_random_samplers_order_and_resumes_anywhere(n, count):
    torch.manual_seed(n + count)
    reference = list(RandomSampler(range(n), num_samples=max(n, count)))[:count]
    torch.manual_seed(n + count)
    kept = []
    stream = PromptStream(n, None, 0, count, keep_seed=kept.append)
    assert list(stream) == reference and kept == [stream.seed]
    for first in (1, count // 3, count - 1):
        assert list(PromptStream(n, kept[0], first, count)) == reference[first:]


def test_train_loader_starts_at_the_trainer_step_and_the_seed_is_kept():
    dm = PromptPairDataModule(
        [f"s{i}" for i in range(10)], [f"t{i}" for i in range(10)], num_fit=6, collate_fn=lambda xs: xs, batch_size=4
    )
    dm.trainer = SimpleNamespace(world_size=1, global_step=0, max_steps=5)
    whole = list(dm.train_dataloader())
    state = dm.state_dict()
    resumed = PromptPairDataModule(
        [f"s{i}" for i in range(10)], [f"t{i}" for i in range(10)], num_fit=6, collate_fn=lambda xs: xs, batch_size=4
    )
    resumed.load_state_dict(state)
    resumed.trainer = SimpleNamespace(world_size=1, global_step=3, max_steps=5)
    assert len(whole) == 5 and list(resumed.train_dataloader()) == whole[3:]
    assert (
        state["fingerprint"]
        == resumed.fingerprint()
        != PromptPairDataModule(
            [f"s{i}" for i in range(10)], [f"t{i}" for i in range(10)], num_fit=6, seed=1
        ).fingerprint()
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_fit": -5}, "data.num_fit=-5"),
        ({"heldout_fraction": 1.5}, "data.heldout_fraction=1.5"),
        ({"batch_size": 0}, "data.batch_size=0"),
    ],
)
def test_nonsense_numbers_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PromptPairDataModule([f"s{i}" for i in range(10)], [f"t{i}" for i in range(10)], **kwargs)


def test_same_prompts_on_both_sides_or_no_held_out_set_is_said():
    prompts = [f"p{i}" for i in range(10)]
    with pytest.warns(UserWarning, match="source and target prompts are the same"):
        PromptPairDataModule(prompts, list(reversed(prompts)))
    with pytest.warns(UserWarning, match="no held-out prompts"):
        PromptPairDataModule(prompts, [f"t{i}" for i in range(10)], num_fit=12)
