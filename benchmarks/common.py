"""Command-line options shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import gc
import platform
import time
from typing import Any, Callable

import torch

import lineas


def parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes: model, sites, dtype, device, threads, json."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--model", default="offline:smollm2-135m-instruct", help="a model spec (lineas.models.sources)")
    p.add_argument("--sites", nargs="+", default=["mlp_out"], help="a preset name or site regexes")
    p.add_argument("--dtype", default="float32", help="model dtype (maps stay float32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's own; 1 is steadier on a busy machine)",
    )
    p.add_argument("--json", default=None, help="write the results to this file")
    return p


def finish(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Add library versions to ``result`` and write it to ``--json`` if given."""
    result["versions"] = {"torch": torch.__version__, "lineas": lineas.__version__, "python": platform.python_version()}
    if args.json:
        from lineas.core.files import write_json

        write_json(args.json, result)
    return result


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(
    steps: dict[str, Callable[[], None]], n: int, device: torch.device, warmup: int
) -> dict[str, list[float]]:
    """Warm each step up, then time ``n`` rounds of one call of each (round-robin: load from other
    processes on a shared machine then hits every variant alike instead of whichever ran last)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync(device)
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(n):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times
