"""Reading prompt files: ``.txt`` (one per line), ``.jsonl`` (a text field), ``.csv`` (a column)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lineas.core.errors import PromptFileError


def read_prompts(path: str | Path, field: str = "text") -> list[str]:
    """Non-empty, stripped prompts of ``path``; ``field`` names the jsonl key / csv column."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} does not exist (paths are relative to {Path.cwd()})")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PromptFileError(
            f"{path}: not UTF-8 text (byte {err.start} is 0x{err.object[err.start]:02x}); "
            "save the prompts as UTF-8 .txt, .jsonl or .csv"
        ) from None
    if suffix == ".jsonl":
        prompts = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PromptFileError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or field not in row:
                raise PromptFileError(f"{path}:{n}: no field {field!r}; set text_field to the key holding the prompt")
            prompts.append(str(row[field]))
    elif suffix == ".csv":
        rows = csv.DictReader(text.splitlines())
        if field not in (rows.fieldnames or []):
            raise PromptFileError(f"{path}: no column {field!r} (columns: {rows.fieldnames}); set text_field")
        prompts = [row[field] or "" for row in rows]
    elif suffix in (".txt", ""):
        prompts = text.splitlines()
    else:
        raise PromptFileError(f"{path}: unknown prompt file type {suffix!r}; use .txt, .jsonl or .csv")
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise PromptFileError(f"{path} holds no prompts")
    return prompts
