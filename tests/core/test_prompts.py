"""Prompt files: three formats read the same prompts; a bad file gets one clear error naming it."""

from __future__ import annotations

import csv
import json

import pytest

from lineas import PromptFileError, read_prompts


def test_three_file_formats_read_the_same_prompts(tmp_path):
    prompts = ["first prompt", "second, with a comma", 'third "quoted"']
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n\n")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"id": i, "text": p}) for i, p in enumerate(prompts)))
    with open(tmp_path / "p.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sentence"])
        w.writerows(enumerate(prompts))
    assert read_prompts(tmp_path / "p.txt") == prompts
    assert read_prompts(tmp_path / "p.jsonl") == prompts
    assert read_prompts(tmp_path / "p.csv", field="sentence") == prompts


def test_missing_prompt_file(tmp_path):
    with pytest.raises(PromptFileError, match="nope.txt does not exist"):
        read_prompts(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("empty.txt", "\n  \n", "holds no prompts"),
        ("rows.jsonl", '{"prompt": "a"}\n', "no field 'text'"),
        ("bad.jsonl", '{"text": "a"}\nnot json\n', r"bad.jsonl:2: not valid JSON"),
        ("table.csv", "sentence\nhello\n", "no column 'text'"),
        ("data.parquet", "x", "unknown prompt file type"),
    ],
)
def test_bad_prompt_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PromptFileError, match=match):
        read_prompts(path)


def test_binary_prompt_file_is_one_short_error_naming_it(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(bytes(range(256)) * 16)  # 4 KB, not UTF-8
    with pytest.raises(PromptFileError) as err:
        read_prompts(path)
    message = str(err.value)
    assert str(path) in message and "not UTF-8" in message and len(message) < 300


def test_read_as_pythons_own_readers_read_them(tmp_path):
    rows = [["text", "id"], ["a prompt\nover two lines", "1"], ["with a BOM before the header", "2"]]
    with open(tmp_path / "p.csv", "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows(rows)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8-sig") as f:
        reference = [r["text"] for r in csv.DictReader(f)]
    assert read_prompts(tmp_path / "p.csv") == reference == ["a prompt\nover two lines", "with a BOM before the header"]
    (tmp_path / "p.jsonl").write_text("\ufeff" + json.dumps({"text": "a\u2028b"}) + "\r\n" + '{"text": null}\n')
    assert read_prompts(tmp_path / "p.jsonl") == ["a\u2028b"]  # JSON allows U+2028 inside a string
    (tmp_path / "p.txt").write_bytes("\ufeffone\r\ntwo\rthree\n".encode())
    with open(tmp_path / "p.txt", encoding="utf-8-sig") as f:  # universal newlines
        assert read_prompts(tmp_path / "p.txt") == [line.strip() for line in f] == ["one", "two", "three"]


@pytest.mark.parametrize("value", [None, ["a", "b"], 3, {"x": 1}, True])
def test_jsonl_values_must_be_text(tmp_path, value):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": value}) + "\n")
    if value is None:
        assert read_prompts(path) == ["fine"]
    else:
        with pytest.raises(PromptFileError, match=r"p.jsonl:2: field 'text' is \w+, not text"):
            read_prompts(path)
