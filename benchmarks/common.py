"""Command-line options shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import platform
from typing import Any

import torch

import lineas


def parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes: model, sites, dtype, device, threads, json."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--model", default=lineas.zoo.SMOLLM2, help="any spec of lineas.zoo.resolve_model")
    p.add_argument("--sites", nargs="+", default=["mlp_out"], help="a preset name or site regexes")
    p.add_argument("--dtype", default="float32", help="model dtype (maps stay float32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's own; 1 is steadier on a busy machine)")
    p.add_argument("--json", default=None, help="write the results to this file")
    return p


def finish(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Add library versions to ``result`` and write it to ``--json`` if given."""
    result["versions"] = {"torch": torch.__version__, "lineas": lineas.__version__,
                          "python": platform.python_version()}
    if args.json:
        from lineas.atomic import write_json

        write_json(args.json, result)
    return result
