"""mkdocs hooks: pages made from README.md and from the loss registry at build time, so that neither can drift.

- ``<!-- readme: HEADING -->`` in a page is replaced by the README section under that heading (``## HEADING``
  or ``### HEADING``, up to the next heading of the same or a higher level); ``<!-- readme: intro -->`` by the
  README's opening paragraphs (between the title and the first ``##`` heading). README.md itself is not changed.
  Its links are rewritten for the site: ``docs/...`` links point at the page or file in the site, ``#anchor``
  links at the page that includes that section (or become plain text where no page does), and links to files
  outside ``docs/`` (which the site does not contain) become plain text.
- ``<!-- objectives-guide -->`` is replaced by the tables of ``docs/gen_objectives_guide.py``, made from
  ``contrasphere.list_losses()`` (the build fails when a registered loss has no entry there, or an entry names
  no registered loss).
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

from markdown.extensions.toc import slugify

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
README = ROOT / "README.md"

_MARKER = re.compile(r"^<!-- readme: (?P<name>.+?) -->[ \t]*$", re.MULTILINE)
_GUIDE_MARKER = "<!-- objectives-guide -->"
_HEADING = re.compile(r"^(?P<level>#{1,6}) (?P<title>.+?)\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>(?:[^\[\]]|\[[^\]]*\])*)\]\((?P<target>[^)\s]+)\)")

# README section slug -> the page (path relative to docs/) that includes it; filled in on_files
_SECTION_PAGES: dict[str, str] = {}


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """``(line index, level, title)`` of every heading outside fenced code blocks."""
    out, fenced = [], False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            out.append((i, len(m["level"]), m["title"]))
    return out


def readme_sections() -> dict[str, tuple[str, list[str]]]:
    """Every README section by title: ``(slug, text)``, the text with its heading and sub-sections."""
    lines = README.read_text(encoding="utf-8").split("\n")
    heads = _headings(lines)
    sections: dict[str, tuple[str, list[str]]] = {}
    first = next((i for i, level, _ in heads if level == 2), len(lines))
    title_line = next((i for i, level, _ in heads if level == 1), -1)
    sections["intro"] = ("", lines[title_line + 1 : first])
    for n, (i, level, title) in enumerate(heads):
        end = next((j for j, lvl, _ in heads[n + 1 :] if lvl <= level), len(lines))
        sections[title] = (slugify(title, "-"), lines[i:end])
    return sections


def _section_slugs(text: list[str]) -> list[str]:
    return [slugify(title, "-") for _, _, title in _headings(text)]


def on_files(files: Any, config: Any) -> Any:
    """Note which page includes which README section, for the links between them."""
    _SECTION_PAGES.clear()
    sections = readme_sections()
    for file in files.documentation_pages():
        for m in _MARKER.finditer(Path(file.abs_src_path).read_text(encoding="utf-8")):
            if m["name"] in sections:
                for slug in _section_slugs(sections[m["name"]][1]):
                    _SECTION_PAGES.setdefault(slug, file.src_uri)
    return files


def _rewrite_links(text: str, page_uri: str) -> str:
    """Rewrite README-relative links for the page ``page_uri`` (relative to docs/)."""
    page_dir = posixpath.dirname(page_uri)

    def link(m: re.Match[str]) -> str:
        bang, text_, target = m["bang"], m["text"], m["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            return m[0]
        path, _, anchor = target.partition("#")
        if not path:
            page = _SECTION_PAGES.get(anchor)
            if page is None:
                return text_
            if page == page_uri:
                return f"{bang}[{text_}](#{anchor})"
            return f"{bang}[{text_}]({posixpath.relpath(page, page_dir or '.')}#{anchor})"
        if not path.startswith("docs/"):
            return text_  # a file of the repository that the site does not contain
        inside = path[len("docs/") :].rstrip("/")
        resolved = DOCS / inside
        if resolved.is_dir():
            if not (resolved / "index.md").exists():
                return text_
            inside = posixpath.join(inside, "index.md")
        elif not resolved.exists():
            return text_
        new = posixpath.relpath(inside, page_dir or ".")
        return f"{bang}[{text_}]({new}{'#' + anchor if anchor else ''})"

    # links may span lines: rewrite each run of lines between fenced code blocks as a whole
    out: list[str] = []
    prose: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            if not fenced:
                out.append(_LINK.sub(link, "\n".join(prose)))
                prose = []
            fenced = not fenced
            out.append(line)
        elif fenced:
            out.append(line)
        else:
            prose.append(line)
    out.append(_LINK.sub(link, "\n".join(prose)))
    return "\n".join(out)


def _objectives_guide() -> str:
    spec = importlib.util.spec_from_file_location("gen_objectives_guide", DOCS / "gen_objectives_guide.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_objectives_guide", module)
    spec.loader.exec_module(module)
    return str(module.markdown())


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill the markers of this page."""
    if _GUIDE_MARKER in markdown:
        markdown = markdown.replace(_GUIDE_MARKER, _objectives_guide())
    if "<!-- readme: " not in markdown:
        return markdown
    sections = readme_sections()

    title = next((m["title"] for m in map(_HEADING.match, markdown.split("\n")) if m and m["level"] == "#"), None)

    def section(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in sections:
            raise KeyError(f"{page.file.src_uri}: README.md has no section {name!r} (headings: {list(sections)})")
        lines = sections[name][1]
        if name == title:
            # the page is this section: its title is the heading (same text, so the same anchor), and the
            # sub-headings move up one level per level removed
            head = _HEADING.match(lines[0])
            assert head is not None
            shift = len(head["level"]) - 1
            heads = {i for i, _, _ in _headings(lines)}
            lines = [line[shift:] if i in heads else line for i, line in enumerate(lines)][1:]
        return _rewrite_links("\n".join(lines).strip("\n"), page.file.src_uri)

    return _MARKER.sub(section, markdown)
