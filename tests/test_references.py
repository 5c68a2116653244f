"""What the README, the docs, the recipes and the code cite exists: repository paths, docs pages and their
anchors; and the README's Python blocks run as written."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from tests.helpers import ROOT

FOLDERS = ("lineas", "docs", "tests", "recipes", "experiments", "benchmarks", "callbacks", "datamodules")
# A repository path: a top-level folder, then path characters; it ends before a dot that ends a sentence.
PATH = re.compile(r"(?<![\w./~-])((?:%s)/[\w./*-]*[\w*])(#[\w-]+)?" % "|".join(FOLDERS))
LINK = re.compile(r"\]\(([^)\s]+)\)")  # a Markdown link's target
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
PLACEHOLDER = re.compile(r"(^|/)[A-Z][A-Z_0-9]*(\.\w+)?($|/)")  # lineas/data/REL, recipes/NAME.yaml


def slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page (headings outside code blocks)."""
    return {slug(h) for h in HEADING.findall(FENCE.sub("", page.read_text()))}


def citing_files() -> list[Path]:
    """Every file whose text cites paths: the README, docs pages, recipes, experiment READMEs and the code."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "recipes").glob("*.yaml"))]
    files += sorted((ROOT / "experiments").rglob("README.md"))
    for folder in ("lineas", "callbacks", "datamodules", "experiments", "benchmarks"):
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    files += sorted((ROOT / "lineas" / "conf").rglob("*.yaml"))
    return files


def exists(target: str, cited_in: Path) -> bool:
    """A cited path exists from the repository root or from the citing file's folder (globs match something)."""
    for base in (ROOT, cited_in.parent):
        if any(ch in target for ch in "*"):
            if any(base.glob(target)):
                return True
        elif (base / target).exists():
            return True
    return False


def broken_references() -> list[str]:
    broken = []
    for path in citing_files():
        text = path.read_text()
        where = path.relative_to(ROOT)
        cited = [(m.group(1), m.group(2)) for m in PATH.finditer(text)]
        if path.suffix == ".md":
            for target in LINK.findall(text):
                if re.match(r"[a-z]+:", target):
                    continue  # a web address
                file, _, anchor = target.partition("#")
                cited.append((file or path.name, "#" + anchor if anchor else None))
        for file, anchor in cited:
            if PLACEHOLDER.search(file):
                continue
            if not exists(file, path):
                broken.append(f"{where}: {file} does not exist")
            elif anchor and file.endswith(".md"):
                page = (ROOT / file) if (ROOT / file).exists() else path.parent / file
                if anchor[1:] not in anchors(page):
                    broken.append(f"{where}: {file}{anchor}: no such heading")
    return broken


def test_slugs_are_those_of_mkdocs():
    assert slug("Sparsity on SmolLM2: support against `module.sparsity.l1`") == (
        "sparsity-on-smollm2-support-against-modulesparsityl1"
    )
    assert slug("Recipes for the paper's models") == "recipes-for-the-papers-models"
    assert slug("Baselines: Linear-AcT and mean shift") == "baselines-linear-act-and-mean-shift"


def test_the_checker_sees_a_broken_path_and_a_broken_anchor(tmp_path):
    page = ROOT / "docs" / "method.md"
    assert exists("docs/method.md", page) and not exists("docs/no_such_page.md", page)
    assert "sparsity-a-proximal-step" in anchors(page) and "no-such-heading" not in anchors(page)
    found = [m.group(0) for m in PATH.finditer("see `lineas/core/maps.py`, docs/method.md#merging-into-weights.")]
    assert found == ["lineas/core/maps.py", "docs/method.md#merging-into-weights"]


def test_every_cited_path_and_anchor_exists():
    broken = broken_references()
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_short_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert not re.search(r"\b(this stop|previous (stop|session)|round \d|before this work)\b", readme, re.I)


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, re.M | re.S)


@pytest.mark.slow  # fits SmolLM2 for 15 steps
def test_the_readme_python_runs_as_written(tmp_path, monkeypatch, capsys, all_threads):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks, "the README has no Python block"
    monkeypatch.chdir(tmp_path)  # the blocks write runs/ and my_maps/ where they run
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.splitlines()
    # each block prints "STRENGTH continuation"; a continuation may hold newlines of its own
    assert [line.split()[0] for line in printed if line.split()[:1] in (["0.0"], ["1.0"])] == ["0.0", "1.0"]
    assert (tmp_path / "my_maps" / "maps.safetensors").is_file()
    assert (tmp_path / "runs" / "python" / "fit_summary.json").is_file()


def test_the_getting_started_python_runs_as_written(tmp_path, monkeypatch, capsys):
    """The docs' first Python block fits a tiny random model: fast enough for the quick suite."""
    (block,) = python_blocks((ROOT / "docs" / "index.md").read_text())
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/index.md", "exec"), {"__name__": "__docs__"})
    words = capsys.readouterr().out.splitlines()[-1].split()
    assert words[0] == "tiny:llama" and 0 < int(words[1]) <= int(words[3])
