"""Generated continuations as tables: plain text for the terminal, Markdown and TensorBoard text, and the check
that a file is such a table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", "\\n")


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table: each prompt, then one continuation per column."""
    width = max(len(r["column"]) for r in rows)
    lines, n = [], 0
    for r in rows:
        if r["column"] == rows[0]["column"]:  # rows are prompt-major: the first column starts a prompt
            n += 1
            lines += ["", f"[{n}] {_one_line(r['prompt'])}"]
        lines.append(f"    {r['column']:>{width}} | {_one_line(r['continuation'])}")
    return "\n".join(lines[1:])


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown (TensorBoard renders its text plugin as Markdown): one row per prompt."""
    columns = list(dict.fromkeys(r["column"] for r in rows))
    by_prompt: dict[int, dict[str, str]] = {}
    order: list[str] = []
    for r in rows:
        if r["column"] == columns[0]:
            order.append(r["prompt"])
        by_prompt.setdefault(len(order) - 1, {})[r["column"]] = r["continuation"]
    head = "| prompt | " + " | ".join(f"strength {c}" if c[:1].isdigit() else c for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for i, p in enumerate(order):
        lines.append(f"| {_md(p)} | " + " | ".join(_md(by_prompt[i].get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def log_tensorboard(
    tb_dir: str | os.PathLike,
    rows: list[dict[str, Any]],
    tag: str = "generations",
    config: dict[str, Any] | None = None,
) -> None:
    """The table as TensorBoard text under ``tag`` (and the config under ``tag/config``)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tb_dir))
    try:
        writer.add_text(tag, markdown_table(rows), global_step=0)
        if config is not None:
            writer.add_text(f"{tag}/config", "```\n" + json.dumps(config, indent=2) + "\n```", global_step=0)
    finally:
        writer.close()


def generations_file(path: Path) -> bool:
    """Whether ``path`` is a table of generations lineas wrote (JSON lines with prompt and column)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and {"prompt", "column"} <= set(first)
