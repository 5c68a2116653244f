"""The in-project Linear-AcT against the official one, site by site and on steered logits.

    python experiments/linear_act_official/compare.py OFFICIAL_FIT/maps OURS_MAPS [--official-fit DIR --ml-act DIR]

Per site: the largest |ours - official| of omega, beta and the clip bounds, also relative to the largest
official value of the site. Then the logits of the first 8 development prompts at strength 1: each maps folder
against the official values applied by lineas (OFFICIAL_MAPS); with ``--ml-act`` and ``--official-fit`` (the
folder fit_official.py wrote), those against the official hooks themselves (apple/ml-act ``LinearOTHook``),
which checks how lineas applies maps. With ``--official-fit``, also per site: lineas's estimator on the
official fit's own samples, and lineas's collection of them with the official maps of the earlier sites.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lineas.core.files import data_path
from lineas.core.maps import AffineMaps, load_maps
from lineas.core.prompts import read_prompts
from lineas.models.causal_lm import CausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official import fit_sentences, statedicts, use_official  # noqa: E402

MODEL = "offline:smollm2-135m-instruct"


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute difference of two tensors."""
    return (a.detach() - b.detach()).abs().max().item()


def site_differences(official: AffineMaps, ours: AffineMaps) -> list[dict[str, float]]:
    """Per site, the largest absolute differences (and those relative to the official values' largest)."""
    rows = []
    for i in range(len(official.sites)):
        (lo_o, hi_o), (lo, hi) = official.bounds[i], ours.bounds[i]
        row = {
            "omega": gap(ours.omega[i], official.omega[i]),
            "beta": gap(ours.beta[i], official.beta[i]),
            "lo": gap(lo, lo_o),
            "hi": gap(hi, hi_o),
        }
        row["rel_omega"] = row["omega"] / official.omega[i].detach().abs().max().item()
        row["rel_beta"] = row["beta"] / official.beta[i].detach().abs().max().item()
        rows.append(row)
    return rows


def official_samples(fit_dir: Path, site: str) -> dict[str, torch.Tensor]:
    """The pooled samples the official fit collected at ``site`` (its response cache), per subset, by item."""
    out = {}
    for subset in ("toxic", "non-toxic"):
        files = sorted(fit_dir.glob(f"cache/responses/*/*/{subset}/{site}:0/mean/*.pt"))
        out[subset] = torch.stack([torch.load(f, weights_only=True)["responses"].float() for f in files])
    return out


def per_site(fit_dir: Path, official: AffineMaps, backbone: CausalLM) -> None:
    """Site by site: (a) lineas's estimator on the official fit's own samples against the official maps (the
    estimator alone), and (b) lineas's collection of those samples with the official maps of the earlier
    sites active against the official samples (the collection and the application of earlier maps alone)."""
    from lineas.core.estimators import sorted_affine_fit, source_bounds
    from lineas.training.module import LinEASModule

    module = LinEASModule(backbone, sites=[str(s) for s in official.sites], estimator="linear_act")
    batches = fit_sentences()
    print(f"{'site':32s} {'estimator: omega':>16s} {'beta':>9s} {'bounds':>9s} {'collection: max |dz|':>20s}")
    for k, site in enumerate(official.sites):
        samples = official_samples(fit_dir, str(site))
        omega, beta = sorted_affine_fit(samples["toxic"], samples["non-toxic"])
        lo, hi = source_bounds(samples["toxic"], (0.0, 100.0))
        fit = [
            gap(omega, official.omega[k]),
            gap(beta, official.beta[k]),
            max(gap(lo, official.bounds[k][0]), gap(hi, official.bounds[k][1])),
        ]
        with torch.no_grad():
            ours = {n: module.pooled(backbone.collate(t), with_maps=True, site=k)[0] for n, t in batches.items()}
            dz = max(gap(ours[n], samples[n]) for n in batches)
            module.maps.omega[k].copy_(official.omega[k])
            module.maps.beta[k].copy_(official.beta[k])
            module.maps.clip_(k, *official.bounds[k])
        print(f"{str(site):32s} {fit[0]:16.3g} {fit[1]:9.3g} {fit[2]:9.3g} {dz:20.3g}")


def official_hooks(ml_act: Path, folder: Path) -> list:
    """The official LinearOTHook of every statedict, at strength 1 on every position (its defaults)."""
    use_official(ml_act)
    import act.hooks as hooks

    out = []
    for path in statedicts(folder):
        hook = hooks.get_hook(
            "linear_ot",
            module_name=path.stem,
            device="cpu",
            dtype=torch.float32,
            strength=1.0,
            quantiles_src="q_0_100",
            intervention_position="all",
        )
        hook.from_state_path(path)
        out.append(hook)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official", type=Path)
    parser.add_argument("ours", type=Path)
    parser.add_argument("--ml-act", type=Path)
    parser.add_argument("--official-fit", type=Path, help="fit_official.py's OUT: its statedicts and samples")
    args = parser.parse_args()
    official, ours = load_maps(args.official), load_maps(args.ours)
    if list(map(str, official.sites)) != list(map(str, ours.sites)):
        raise SystemExit(f"{args.official} and {args.ours} steer different sites")
    print(f"{'site':32s} {'omega':>9s} {'beta':>9s} {'lo':>9s} {'hi':>9s} {'rel omega':>9s} {'rel beta':>9s}")
    rows = site_differences(official, ours)
    for site, r in zip(official.sites, rows):
        print(f"{str(site):32s} " + " ".join(f"{v:9.3g}" for v in r.values()))
    print("largest over sites:", {k: float(f"{max(r[k] for r in rows):.3g}") for k in rows[0]})

    torch.set_num_threads(2)
    backbone = CausalLM(MODEL, "float32")
    model, tokenizer = backbone.model, backbone.tokenizer
    prompts = read_prompts(data_path("toxicity/prompts_dev.txt"))[:8]
    batches = [tokenizer(p, return_tensors="pt") for p in prompts]

    @torch.no_grad()
    def logits() -> torch.Tensor:
        return torch.cat([model(**b, use_cache=False).logits[0] for b in batches])

    base = logits()
    steered = {}
    for name, maps in (("official values, lineas maps", official), ("ours", ours)):
        with maps.apply(model, strength=1.0):
            steered[name] = logits()
    if args.official_fit:
        per_site(args.official_fit, official, backbone)
    if args.ml_act and args.official_fit:
        hooks = official_hooks(args.ml_act, next(args.official_fit.glob("cache/interventions/*/*")))
        from act.models.model_with_hooks import ModelWithHooks

        wrapped = ModelWithHooks(module=model, hooks=hooks)
        wrapped.register_hooks()
        steered["official hooks"] = logits()
        wrapped.remove_hooks()
    reference = steered["official values, lineas maps"]
    print(f"{base.shape[0]} tokens of {len(prompts)} development prompts, strength 1")
    for name, value in steered.items():
        print(
            f"{name:30s} vs base max |dlogit| {(value - base).abs().max():.4g}; vs official values "
            f"max |dlogit| {(value - reference).abs().max():.4g}, top-1 agreement "
            f"{(value.argmax(-1) == reference.argmax(-1)).float().mean():.4f}"
        )


if __name__ == "__main__":
    main()
