"""The README is the front door and docs/ the reference: the README stays short, and every relative
link in either (file and #anchor) resolves, so a moved section cannot leave a dead link behind."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", body, flags=re.M)}


def links(page: Path) -> list[str]:
    body = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return [t for t in LINK.findall(body) if not re.match(r"[a-z]+://|mailto:", t)]


def test_the_readme_reads_in_ten_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    dead = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            dead.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            dead.append(target)
    assert not dead, f"{page.name}: dead links {dead}"


def test_slug_matches_githubs_rule():
    assert slug("Reproducing the papers: what is proven on CPU, what only a GPU run can show") == \
        "reproducing-the-papers-what-is-proven-on-cpu-what-only-a-gpu-run-can-show"
    assert slug("The `sweep:` block") == "the-sweep-block"
