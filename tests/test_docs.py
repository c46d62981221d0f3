"""The documentation holds together: every relative link and anchor in README.md and docs/
resolves, docs/api.md documents exactly the public names (``iplap.__all__``), and the README
stays short, with a link to every page of docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import iplap

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
API_PAGE = DOCS / "api.md"
#: The README's length limit (the issue: about 200 lines, at most about 250).
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
#: ``[text](target)`` and ``![alt](target)``, with an optional "title"; the text may hold one
#: level of brackets (an image inside a link).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
#: A public name's heading on the API page: ``### `Name` ``.
NAME_HEADING = re.compile(r"^###\s+`([^`]+)`\s*$")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match:
            if fenced is None:
                fenced = match.group(1)
            elif match.group(1) == fenced:
                fenced = None
            continue
        if fenced is None:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup dropped, lowercase, punctuation removed
    except ``-`` and ``_``, each space a ``-``."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link outside code."""
    out = []
    for number, line in prose_lines(path.read_text()):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            out.append((number, target))
    return out


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)) or target.startswith("//")


def test_slugs_are_githubs():
    assert slug("Service and web page (`iplap serve`)") == "service-and-web-page-iplap-serve"
    assert slug("### `__version__`".lstrip("# ")) == "__version__"
    assert slug("The int8 gap, operator by operator") == "the-int8-gap-operator-by-operator"
    assert slug("Live streams against the ceiling (`iplap bench --live`)") == \
        "live-streams-against-the-ceiling-iplap-bench---live"
    assert slug("[results.md](bench/results.md) in short") == "resultsmd-in-short"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    broken = []
    for number, target in links(path):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not dest.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, "\n".join(broken)


def test_the_api_page_documents_exactly_the_public_names():
    headings = [m.group(1) for _, line in prose_lines(API_PAGE.read_text()) if (m := NAME_HEADING.match(line))]
    assert len(headings) == len(set(headings)), sorted(n for n in headings if headings.count(n) > 1)
    missing = set(iplap.__all__) - set(headings)
    extra = set(headings) - set(iplap.__all__)
    assert not missing and not extra, f"undocumented: {sorted(missing)}; not public: {sorted(extra)}"


def test_the_readme_is_short_and_links_every_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    linked = {(ROOT / target.partition("#")[0]).resolve() for _, target in links(README) if not is_external(target)}
    pages = [p for p in DOCS.glob("*.md")]  # the pages; docs/bench/ holds generated results, linked from them
    assert pages
    unlinked = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked]
    assert not unlinked, f"pages the README does not link: {unlinked}"
