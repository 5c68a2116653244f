"""The toxicity frontier search on SmolLM2: fit every setting of ``settings.py`` and evaluate it on the
development sets at strengths 0.25 / 0.5 / 0.75 / 1, as ``python -m lineas.compare`` does.

    python experiments/toxicity_frontier/sweep.py [--runs DIR] [--only NAME ...] [--split dev|test] [--ml-act DIR]

Each setting is fitted with ``python -m lineas.train`` (the official Linear-AcT by apple/ml-act's own code, found
at ``--ml-act``: experiments/linear_act_official) into ``RUNS/NAME`` and evaluated in this process (the
base model loaded once); its figures go to ``results/SPLIT/NAME.json``, the base model's to
``results/SPLIT/base.json``. Resumable: a setting whose results file exists is skipped, and a fitted run
is evaluated without being fitted again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from settings import GATES, OFFICIAL, SETTINGS, TEST  # noqa: E402

from lineas import load_maps  # noqa: E402
from lineas.core.files import data_path, write_json  # noqa: E402
from lineas.core.prompts import read_prompts  # noqa: E402
from lineas.models.causal_lm import CausalLM, load_causal_lm  # noqa: E402
from lineas.tasks.configs import Sampling  # noqa: E402
from lineas.tasks.evaluate import evaluate  # noqa: E402
from lineas.tasks.gate import mean_gate  # noqa: E402

STRENGTHS = [0.25, 0.5, 0.75, 1.0]
SPLITS = {
    "dev": ("toxicity/prompts_dev.txt", "neutral/wiki_dev.txt"),
    "test": ("toxicity/prompts.txt", "neutral/wiki.txt"),
}
MODEL = "offline:smollm2-135m-instruct"
NO_EXTRAS = ["callbacks.evaluate=null", "callbacks.export_merged=null", "callbacks.export_gguf=null"]


def timed(cmd: list[str], walls: Path, **kwargs) -> subprocess.CompletedProcess:
    """``cmd`` run (printed first), its wall time in seconds appended to ``walls`` even if it fails."""
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    try:
        return subprocess.run(cmd, **kwargs)
    finally:
        with walls.open("a") as f:
            f.write(f"{time.perf_counter() - start:.2f}\n")


def fit(name: str, overrides: list[str], runs: Path) -> tuple[Path | None, float | None, str | None]:
    """The maps of ``name`` (fitted now unless its run is complete; an interrupted fit continues from its last
    checkpoint), the fit's wall time in seconds (all its sessions) and, for a fit whose loss became non-finite,
    lineas.train's message instead of maps."""
    out, walls = runs / name, runs / f"{name}.wall"
    if (out / "maps" / "lineas.json").exists():
        return out / "maps", _wall(out, walls), None
    last = out / "checkpoints" / "last.ckpt"
    resume = [f"resume={last}"] if last.exists() else []
    if out.exists() and not resume:  # stopped before its first checkpoint: start it again
        shutil.rmtree(out)
        walls.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "lineas.train", f"output_dir={out}", *NO_EXTRAS, *overrides, *resume]
    done = timed([*cmd, "trainer.enable_progress_bar=false"], walls, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        if "non-finite W2 loss" not in done.stderr:
            raise SystemExit(f"{name}: lineas.train failed (exit {done.returncode})")
        return None, _wall(out, walls), done.stderr.strip().splitlines()[-1]
    return out / "maps", _wall(out, walls), None


def fit_official(name: str, runs: Path, ml_act: Path | None) -> tuple[Path, float | None, None]:
    """The official Linear-AcT's maps of ``name`` (fitted now by apple/ml-act's own code unless they exist) and
    the fit's wall time, as :func:`fit` returns them."""
    out, walls = runs / name, runs / f"{name}.wall"
    if not (out / "maps" / "lineas.json").exists():
        if ml_act is None:
            raise SystemExit(f"{name}: give --ml-act DIR, the folder holding apple/ml-act's act/ package")
        script = HERE.parent / "linear_act_official" / "fit_official.py"
        timed([sys.executable, str(script), str(out), "--ml-act", str(ml_act), *OFFICIAL[name]], walls, check=True)
    return out / "maps", _wall(out, walls), None


def gate(name: str, runs: Path) -> tuple[Path | None, float | None, str | None]:
    """The post hoc gated maps of ``name`` (the maps it gates fitted first, if need be) and the gate fit's wall
    time, as :func:`fit` returns them."""
    of, overrides = GATES[name]
    maps_dir, _, failure = fit(of, SETTINGS[of], runs)
    if maps_dir is None:
        return None, None, failure
    out, walls = runs / name, runs / f"{name}.wall"
    if not (out / "maps" / "gate.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        walls.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "lineas.gate", f"maps={maps_dir}", f"output_dir={out / 'maps'}", *overrides]
        timed(cmd, walls, check=True)
    return out / "maps", _wall(out, walls), None


def gate_share(backbone: CausalLM, maps, prompts: list[str], rows: list[dict], neutral: list[str]) -> dict[str, float]:
    """The share of tokens steered at strength 1 (mean gate over tokens and sites) on the prompts, on their
    continuations at strength 1 (the prompt's tokens not counted) and on the neutral sentences."""
    ones = [r for r in rows if r["strength"] == 1.0]
    return {
        "prompts": mean_gate(backbone, maps, prompts),
        "continuations": mean_gate(
            backbone, maps, [r["prompt"] + r["continuation"] for r in ones], [r["prompt"] for r in ones]
        ),
        "neutral": mean_gate(backbone, maps, neutral),
    }


def _wall(out: Path, walls: Path) -> float | None:
    """Seconds of all the sessions of a fit (wall_s.txt: fits recorded before fits could continue)."""
    if walls.exists():
        return round(sum(float(x) for x in walls.read_text().split()), 2)
    old = out / "wall_s.txt"
    return float(old.read_text()) if old.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/frontier_runs"))
    parser.add_argument("--only", nargs="*", default=None, help="setting names (default: all of settings.py)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="dev")
    parser.add_argument("--ml-act", type=Path, help="apple/ml-act's folder, for the official Linear-AcT settings")
    args = parser.parse_args()
    results = HERE / "results" / args.split
    results.mkdir(parents=True, exist_ok=True)
    names = args.only or (TEST if args.split == "test" else [*SETTINGS, *GATES, *OFFICIAL])
    todo = [n for n in names if not (results / f"{n}.json").exists()]
    if not todo and (results / "base.json").exists():
        print("nothing to do")
        return
    prompts_file, texts_file = SPLITS[args.split]
    prompts, neutral = read_prompts(data_path(prompts_file)), read_prompts(data_path(texts_file))
    model, tokenizer = load_causal_lm(MODEL, "float32")
    sampling = Sampling(batch_size=80)  # every prompt in one batch: the same draws as compare with batch_size=80
    if not (results / "base.json").exists():
        base, _ = evaluate(model, tokenizer, None, [0.0], prompts, neutral, sampling, progress=False)
        base[0]["strength"] = 0.0  # the model as it is: the base
        write_json(results / "base.json", {"prompts": prompts_file, "texts": texts_file, "metrics": base})
    backbone = None  # for the gate's share of tokens, loaded once a gated setting needs it
    for name in todo:
        gated_of = GATES[name][0] if name in GATES else None
        if name in OFFICIAL:
            overrides = OFFICIAL[name]
            maps_dir, wall, failure = fit_official(name, args.runs, args.ml_act)
        else:
            overrides = GATES[name][1] if gated_of else SETTINGS[name]
            maps_dir, wall, failure = gate(name, args.runs) if gated_of else fit(name, overrides, args.runs)
        if maps_dir is None:  # the loss became non-finite: no maps
            record = {"name": name, "overrides": overrides, "fit_wall_s": wall, "diverged": True}
            write_json(results / f"{name}.json", {**record, "failure": failure, "metrics": []})
            print(f"{name}: diverged ({failure})", flush=True)
            continue
        maps = load_maps(maps_dir)
        summary = (args.runs / gated_of if gated_of else maps_dir.parent) / "fit_summary.json"
        w2 = json.loads(summary.read_text())["heldout_w2"]["mean"] if summary.exists() else None  # none: official
        if (
            w2 and w2["after"] >= w2["before"] and maps.info.get("estimator") == "lineas"
        ):  # the fit moved away from the target: no evaluation
            write_json(
                results / f"{name}.json",
                {
                    "name": name,
                    "overrides": overrides,
                    "fit_wall_s": wall,
                    "diverged": True,
                    "heldout_w2": w2,
                    "metrics": [],
                },
            )
            print(f"{name}: held-out W2 {w2['before']:.4f} -> {w2['after']:.4f}: diverged, not evaluated", flush=True)
            continue
        start = time.perf_counter()
        metrics, rows = evaluate(model, tokenizer, maps, STRENGTHS, prompts, neutral, sampling, progress=False)
        record = {
            "name": name,
            "overrides": overrides,
            "fit_wall_s": wall,
            "eval_wall_s": round(time.perf_counter() - start, 2),
            "support": maps.support(maps.info.get("sparsity", {}).get("eps", 1e-5))["total"],
            "dims": sum(maps.dims),
            "steps": maps.info.get("steps"),
            "clipped": maps.clipped,
            "heldout_w2": w2,
            "metrics": metrics,
        }
        if gated_of:
            record["gates"] = gated_of
        if maps.gated:
            backbone = backbone or CausalLM(MODEL, "float32", max_length=256)
            record["gate_share"] = gate_share(backbone, maps, prompts, rows, neutral)
        write_json(results / f"{name}.json", record)
        one = metrics[-1]
        print(
            f"{name}: strength 1 mean tox {one['toxicity_mean']:.4f} ppl {one['perplexity']:.2f} "
            f"fluency {one['fluency']:.2f} (fit {wall} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
