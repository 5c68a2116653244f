"""The toxicity frontier search on SmolLM2: fit every setting of ``settings.py`` and evaluate it on the
development sets at strengths 0.25 / 0.5 / 0.75 / 1, as ``python -m lineas.compare`` does.

    python experiments/toxicity_frontier/sweep.py [--runs DIR] [--only NAME ...] [--split dev|test]

Each setting is fitted with ``python -m lineas.train`` into ``RUNS/NAME`` and evaluated in this process (the
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

from settings import SETTINGS  # noqa: E402

from lineas import load_maps  # noqa: E402
from lineas.core.files import data_path, write_json  # noqa: E402
from lineas.core.prompts import read_prompts  # noqa: E402
from lineas.models.causal_lm import load_causal_lm  # noqa: E402
from lineas.tasks.configs import Sampling  # noqa: E402
from lineas.tasks.evaluate import evaluate  # noqa: E402

STRENGTHS = [0.25, 0.5, 0.75, 1.0]
SPLITS = {
    "dev": ("toxicity/prompts_dev.txt", "neutral/wiki_dev.txt"),
    "test": ("toxicity/prompts.txt", "neutral/wiki.txt"),
}
MODEL = "offline:smollm2-135m-instruct"
NO_EXTRAS = ["callbacks.evaluate=null", "callbacks.export_merged=null", "callbacks.export_gguf=null"]


def fit(name: str, overrides: list[str], runs: Path) -> tuple[Path, float | None]:
    """The maps of ``name`` (fitted now unless its run is complete) and the fit's wall time in seconds."""
    out = runs / name
    if (out / "maps" / "lineas.json").exists():
        wall = out / "wall_s.txt"
        return out / "maps", float(wall.read_text()) if wall.exists() else None
    if out.exists():  # an interrupted fit of this sweep: start it again
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "lineas.train", f"output_dir={out}", *NO_EXTRAS, *overrides]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run([*cmd, "trainer.enable_progress_bar=false"], check=True)
    wall = time.perf_counter() - start
    (out / "wall_s.txt").write_text(f"{wall:.2f}\n")
    return out / "maps", wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/frontier_runs"))
    parser.add_argument("--only", nargs="*", default=None, help="setting names (default: all of settings.py)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="dev")
    args = parser.parse_args()
    results = HERE / "results" / args.split
    results.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SETTINGS)
    todo = [n for n in names if not (results / f"{n}.json").exists()]
    if not todo and (results / "base.json").exists():
        print("nothing to do")
        return
    prompts_file, texts_file = SPLITS[args.split]
    prompts, neutral = read_prompts(data_path(prompts_file)), read_prompts(data_path(texts_file))
    model, tokenizer = load_causal_lm(MODEL, "float32")
    sampling = Sampling()
    if not (results / "base.json").exists():
        base, _ = evaluate(model, tokenizer, None, [0.0], prompts, neutral, sampling, progress=False)
        base[0]["strength"] = 0.0  # the model as it is: the base
        write_json(results / "base.json", {"prompts": prompts_file, "texts": texts_file, "metrics": base})
    for name in todo:
        maps_dir, wall = fit(name, SETTINGS[name], args.runs)
        maps = load_maps(maps_dir)
        start = time.perf_counter()
        metrics, _ = evaluate(model, tokenizer, maps, STRENGTHS, prompts, neutral, sampling, progress=False)
        record = {
            "name": name,
            "overrides": SETTINGS[name],
            "fit_wall_s": wall,
            "eval_wall_s": round(time.perf_counter() - start, 2),
            "support": maps.support(maps.info.get("sparsity", {}).get("eps", 1e-5))["total"],
            "dims": sum(maps.dims),
            "steps": maps.info.get("steps"),
            "metrics": metrics,
        }
        write_json(results / f"{name}.json", record)
        one = metrics[-1]
        print(
            f"{name}: strength 1 mean tox {one['toxicity_mean']:.4f} ppl {one['perplexity']:.2f} "
            f"fluency {one['fluency']:.2f} (fit {wall} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
