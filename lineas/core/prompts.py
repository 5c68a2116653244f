"""Reading prompt files: ``.txt`` (one per line), ``.jsonl`` (a text field), ``.csv`` (a column)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from lineas.core.errors import PromptFileError


def read_prompts(path: str | Path, field: str = "text") -> list[str]:
    """Non-empty, stripped prompts of ``path``; ``field`` names the jsonl key / csv column.

    Read as Python's own readers read them: UTF-8 with or without a byte-order mark, a CSV field may hold
    quoted line breaks, a JSONL value must be a string (or null: skipped).
    """
    if not isinstance(path, (str, Path)):
        raise PromptFileError(f"prompts={path!r}: give the path of a .txt, .jsonl or .csv file")
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} does not exist (paths are relative to {Path.cwd()})")
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise PromptFileError(
            f"{path}: not UTF-8 text (byte {err.start} is 0x{err.object[err.start]:02x}); "
            "save the prompts as UTF-8 .txt, .jsonl or .csv"
        ) from None
    except OSError as err:
        raise PromptFileError(f"{path}: cannot be read ({err.strerror})") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as Python's text files split lines
    if suffix == ".jsonl":
        prompts = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PromptFileError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or field not in row:
                raise PromptFileError(f"{path}:{n}: no field {field!r}; set text_field to the key holding the prompt")
            if not isinstance(row[field], (str, type(None))):
                raise PromptFileError(
                    f"{path}:{n}: field {field!r} is {type(row[field]).__name__}, not text; each prompt is a string"
                )
            prompts.append(row[field] or "")
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            rows = list(reader)
        except csv.Error as err:
            raise PromptFileError(f"{path}: not valid CSV ({err})") from None
        fieldnames = reader.fieldnames or []
        if field not in fieldnames:
            raise PromptFileError(f"{path}: no column {field!r} (columns: {fieldnames}); set text_field")
        prompts = [row[field] or "" for row in rows]
    elif suffix in (".txt", ""):
        prompts = lines
    else:
        raise PromptFileError(f"{path}: unknown prompt file type {suffix!r}; use .txt, .jsonl or .csv")
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise PromptFileError(f"{path} holds no prompts")
    return prompts
