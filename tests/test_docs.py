"""The README and docs/ point at what exists: every relative link names a file of the repository
(and a heading of it, where it names one), every benchmark they cite is a script of benchmarks/,
every `diffplugin` command they show is one the command line has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {anchor(h) for h in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_names_a_file_and_heading_that_exist(page):
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_every_cited_benchmark_and_command_exists():
    import argparse

    from plugin_core.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = set(subparsers.choices)
    text = "\n".join(p.read_text() for p in PAGES)
    cited = set(re.findall(r"benchmarks[./](bench_\w+)", text))
    assert cited, "the docs cite no benchmark: the pattern is stale"
    # a benchmark removed since, named with the commit it was measured at, is history, not a command
    missing = {b for b in cited if not (ROOT / "benchmarks" / f"{b}.py").exists()
               and not re.search(rf"{b}(\.py)?`?\s+at\s+commit\s+[0-9a-f]{{7}}", text)}
    assert not missing, f"cited benchmarks that are not in benchmarks/: {sorted(missing)}"
    shown = set(re.findall(r"(?m)(?:^|\$ |`)diffplugin ([a-z][a-z-]+)", text))
    assert shown and shown <= commands, f"commands the docs show that the CLI lacks: {sorted(shown - commands)}"
