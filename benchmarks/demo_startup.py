"""Start-up time of the slider page: from ``python -m lineas.demo ...`` to the page answering on 127.0.0.1.

Starts the command in a process of its own, polls the page every 0.1 s, stops the process once it answers, and
prints the seconds (best of ``--repeat`` runs, and each run). The model must already be cached (a first run of the
default recipe converts SmolLM2 once).

Examples::

    python benchmarks/demo_startup.py maps=runs/default/maps
    python benchmarks/demo_startup.py maps=experiments/shapes_world/maps/shapes_style/maps --repeat 3
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startup_seconds(args: list[str], timeout: float = 600.0) -> float:
    """Seconds from starting ``python -m lineas.demo ARGS`` to its page answering."""
    port = free_port()
    cmd = [sys.executable, "-m", "lineas.demo", *args, f"port={port}"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"lineas.demo exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as page:
                    if page.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"the page did not answer within {timeout} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("args", nargs="+", help="arguments of python -m lineas.demo, e.g. maps=RUN/maps")
    parser.add_argument("--repeat", type=int, default=1)
    opts = parser.parse_args()
    runs = [startup_seconds(opts.args) for _ in range(opts.repeat)]
    print(
        f"lineas.demo {' '.join(opts.args)}: page answered after {min(runs):.2f} s (runs: "
        + ", ".join(f"{r:.2f}" for r in runs)
        + ")"
    )


if __name__ == "__main__":
    main()
