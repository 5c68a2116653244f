"""Fit the official Linear-AcT (apple/ml-act ``linear_ot``, its defaults, unmodified) on SmolLM2-135M-Instruct
and the project's 32 + 32 toxicity fit sentences, and write its maps as a lineas maps folder.

    python experiments/linear_act_official/fit_official.py OUT --ml-act DIR [--dtype float32] [--sites REGEX]

``DIR`` holds the official code (the folder with ``act/``; e.g. an unpacked snapshot of github:apple/ml-act).
Its statedicts go under ``OUT/cache``; ``OUT/maps`` receives, per site, the official ``omega`` (``net.w1``),
``beta`` (``net.b1``) and clip bounds (the ``q_0_100`` source quantiles). Resumable: the official loop runs
as it is, but a site whose statedict exists is neither collected nor fitted again (the saved hooks of earlier
sites are still loaded for later ones, as in an uninterrupted run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lineas.core.maps import AffineMaps
from lineas.models.sources import resolve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official import fit_sentences, statedicts, use_official  # noqa: E402

MODEL = "offline:smollm2-135m-instruct"


def official_maps(paths: list[Path], info: dict) -> AffineMaps:
    """A maps folder's content from the official statedicts at ``paths`` (sites in the order given)."""
    states = [torch.load(p, weights_only=True) for p in paths]
    sites = [p.stem.split(":")[0] for p in paths]
    maps = AffineMaps(sites, [s["net.w1"].numel() for s in states], info=info)
    with torch.no_grad():
        for i, state in enumerate(states):
            maps.omega[i].copy_(state["net.w1"].reshape(-1))
            maps.beta[i].copy_(state["net.b1"].reshape(-1))
            lo, hi = state["quantiles_dict_src"]["q_0_100"]
            maps.clip_(i, lo.float(), hi.float())
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--ml-act", type=Path, required=True, help="the folder holding the official act/ package")
    parser.add_argument("--dtype", default="float32", help="the base model's dtype (the official default: float32)")
    parser.add_argument("--sites", default="model.layers.*.mlp.down_proj", help="official module_names pattern")
    args = parser.parse_args()
    use_official(args.ml_act)
    import act.datasets as act_datasets
    import act.scripts.learn_intervention as li
    from act.datasets.collators import DictCollatorWithPadding
    from hydra import compose, initialize_config_dir

    class FitSentences(torch.utils.data.Dataset):
        """The project's fit sentences (those the default recipe fits on), itemised like the official Jigsaw set."""

        def __init__(self, tokenizer):
            sentences = fit_sentences()
            self.texts = [t for texts in sentences.values() for t in texts]
            self.subsets = [name for name, texts in sentences.items() for _ in texts]
            self.tokenizer = tokenizer

        def __getitem__(self, item):
            datum = {"id": f"{item:03d}", "comment_text": self.texts[item], "subset": self.subsets[item]}
            return datum | dict(self.tokenizer(self.texts[item], truncation=True, padding=False))

        def __len__(self):
            return len(self.texts)

    act_datasets.DATASET_LOADERS_REGISTRY["lineas-toxicity"] = lambda path, split, subsets, tokenizer, **kw: (
        FitSentences(tokenizer),
        DictCollatorWithPadding(tokenizer),
    )
    done = {p.stem for p in args.out.glob("cache/interventions/*/*/*.statedict")}
    collect, fit = li.ResponsesManager.compute_responses, li.InterventionsManager._learn_intervention

    def compute_responses(self, module_names=None, extra_hooks=()):
        if module_names and all(m in done for m in module_names):
            return self.output_path
        return collect(self, module_names, list(extra_hooks))

    def learn(self, module_name):
        if module_name not in done:
            print("fitting", module_name, flush=True)
            fit(self, module_name)

    li.ResponsesManager.compute_responses = compute_responses
    li.InterventionsManager._learn_intervention = learn
    with initialize_config_dir(config_dir=str((args.ml_act / "act" / "configs").resolve()), version_base=None):
        cfg = compose(
            config_name="text_generation",
            overrides=[
                "model=gpt2",
                f"model.model_path={resolve(MODEL).path}",
                f"model.dtype=${{dtype:torch.{args.dtype}}}",
                f"model.module_names=[{args.sites}]",
                "device=cpu",
                "task_params.dataset=lineas-toxicity",
                f"cache_dir={args.out.resolve()}/cache",
                f"data_dir={args.out.resolve()}/data",
                "wandb.mode=disabled",
            ],
        )
    manager = li.learn_intervention(cfg)
    paths = statedicts(manager.output_path)
    info = {
        "estimator": "official apple/ml-act linear_ot",
        "base_model": MODEL,
        "model_type": "llama",
        "dtype": args.dtype,
    }
    out = official_maps(paths, info).save(args.out / "maps")
    print(f"{len(paths)} sites -> {out}")


if __name__ == "__main__":
    main()
