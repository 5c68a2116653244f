"""Time to steer: the default job's stages (what ``make run`` does), timed in one run.

Stages: imports, model load, data, module set-up (site probe), target caching, held-out W2 before, the fit
loop, maps saving, held-out W2 after, export (transformers folder, GGUF), evaluation. The job is the one
``python -m lineas.train`` composes (default recipe unless overridden), run in this process with a timer
around each stage. Writes a table and, with ``--json``, the figures.

Examples::

    python benchmarks/time_to_steer.py                                  # the default job
    python benchmarks/time_to_steer.py trainer.max_steps=20 --json /tmp/tts.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

T0 = time.perf_counter()

import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

import lineas  # noqa: E402
from lineas.training.job import build_fit, train_config  # noqa: E402

CALLBACK_STAGES = {
    "SaveMaps": "save maps",
    "ExportMerged": "export transformers",
    "ExportGGUF": "export GGUF",
    "EvaluateSteering": "evaluation",
}


class Clock:
    """Seconds per stage, in the order first seen."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def wrap(self, obj: Any, method: str, name: str) -> None:
        """Time every call of ``obj.method`` as stage ``name``."""
        inner: Callable = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return inner(*args, **kwargs)

        setattr(obj, method, timed)


def run(overrides: list[str], output_dir: str) -> tuple[Clock, float]:
    clock = Clock()
    clock.seconds["imports"] = time.perf_counter() - T0
    cfg = train_config(f"output_dir={output_dir}", *overrides)
    start = time.perf_counter()
    job = build_fit(cfg, logger=TensorBoardLogger(output_dir, name="tb", version=""), stage=clock.stage)
    clock.wrap(job.module, "cache_targets", "target caching")
    for cb in job.trainer.callbacks:
        name = type(cb).__name__
        if name == "FitSummary":
            clock.wrap(cb, "on_fit_start", "held-out W2 before")
            clock.wrap(cb, "on_fit_end", "held-out W2 after + summary")
        elif name in CALLBACK_STAGES:
            clock.wrap(cb, "on_fit_end", CALLBACK_STAGES[name])
    with clock.stage("trainer.fit (all)"):
        job.run()
    inner = sum(
        v
        for k, v in clock.seconds.items()
        if k not in ("imports", "model load", "data", "module set-up (site probe)", "trainer.fit (all)")
    )
    clock.seconds["fit loop (steps, validation)"] = clock.seconds.pop("trainer.fit (all)") - inner
    return clock, time.perf_counter() - start + clock.seconds["imports"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the job, as for python -m lineas.train")
    p.add_argument("--json", default=None, help="write the results to this file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lineas-tts-") as tmp:
        clock, total = run(args.overrides, tmp)
    print(f"\n{'stage':<30} {'seconds':>8} {'share':>6}")
    for name, s in clock.seconds.items():
        print(f"{name:<30} {s:>8.2f} {100 * s / total:>5.1f}%")
    print(f"{'total':<30} {total:>8.2f}")
    result = {
        "overrides": args.overrides,
        "seconds": clock.seconds,
        "total_s": total,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "lineas": lineas.__version__},
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
