"""``python -m lineas.demo``: load the model and the maps folders, then serve the page (:mod:`lineas.tasks.demo`)."""

from __future__ import annotations

import sys

import torch

from lineas.tasks.configs import DemoConfig
from lineas.tasks.demo import bind_warning, build_app, load_demo, serve


def run_demo(cfg: DemoConfig) -> None:
    """Serve the page of ``cfg`` until interrupted; a bad maps folder stops it before it starts."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    warning = bind_warning(cfg.host)
    if warning is not None:
        print(f"lineas.demo: warning: {warning}", file=sys.stderr, flush=True)
    app = build_app(load_demo(cfg), cfg)
    serve(app, cfg.host, cfg.port)
