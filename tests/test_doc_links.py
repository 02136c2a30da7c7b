"""The documentation's links resolve: every relative link between the Markdown files
(README.md, CHANGELOG.md, docs/ and docs/siem/) names a file that exists and, with a
``#fragment``, a heading of that file; and every page of docs/siem/ is linked from
docs/formats.md or README.md, so a reader can find it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").rglob("*.md")],
)
# [text](target) outside code: inline links only (the docs use no reference links).
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lowercase, punctuation but '-' and '_' dropped, spaces to '-'."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        out.add(text.replace(" ", "-"))
    return out


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_every_siem_page_is_linked_from_formats_or_readme() -> None:
    pages = sorted((REPO / "docs" / "siem").glob("*.md"))
    assert {p.name for p in pages} >= {
        "splunk.md",
        "sentinel.md",
        "qradar.md",
        "elastic.md",
        "security-lake.md",
    }
    linked = {
        (start.parent / t.partition("#")[0]).resolve()
        for start in (REPO / "docs" / "formats.md", REPO / "README.md")
        for t in links(start)
    }
    assert [p.name for p in pages if p.resolve() not in linked] == []


def test_the_checker_finds_a_broken_link(tmp_path: Path) -> None:
    """The link check itself: a missing file and a missing heading are both reported."""
    (tmp_path / "a.md").write_text("# Title here\n\n[ok](#title-here) [x](b.md) [y](a.md#nope)\n")
    found = links(tmp_path / "a.md")
    assert found == ["#title-here", "b.md", "a.md#nope"]
    assert "title-here" in anchors(tmp_path / "a.md")
    assert not (tmp_path / "b.md").exists() and "nope" not in anchors(tmp_path / "a.md")
