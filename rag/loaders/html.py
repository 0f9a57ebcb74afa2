"""HTML loader: a page's main text as paragraphs under its h1–h6 heading path."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString

from rag.loaders import LoadError, Parsed
from rag.loaders.decoding import decode_text
from rag.loaders.text import SectionBuilder

# Never body text: code, media, widgets and page chrome.
_DROPPED_TAGS = [
    "head", "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object",
    "embed", "button", "select", "textarea", "input", "form", "nav", "aside", "dialog",
]  # fmt: skip
# Site banners and footers; the header/footer of an article is kept (it may hold the h1).
_CHROME_TAGS = ["header", "footer"]
_CONTENT_TAGS = ["article", "main"]
# Class / id words (split on "-" and "_") that mark navigation rather than content.
_NOISE_WORDS = frozenset({
    "nav", "navbar", "navheader", "navfooter", "navigation", "menu", "mainmenu", "submenu",
    "toc", "breadcrumb", "breadcrumbs", "sidebar", "footer", "nosearch", "skiplink",
})  # fmt: skip
_NOISE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
_NEVER_NOISE = frozenset({"html", "body", "main", "article"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# Elements that end the running paragraph; anything else is inline. (An <li> of a list
# is handled with its list; one found elsewhere is just a block.)
_BLOCKS = frozenset({
    "html", "body", "main", "article", "section", "div", "p", "blockquote", "center",
    "address", "details", "summary", "figure", "figcaption", "dl", "dt", "dd", "fieldset",
    "legend", "hr", "header", "footer", "li",
})  # fmt: skip
# Elements whose edges separate words when flattened to one line.
_WORD_BREAKS = _BLOCKS | set(_HEADINGS) | {"br", "ul", "ol", "table", "tr", "td", "th", "pre"}
_WORD_SPLIT = re.compile(r"[-_]")


def parse(path: Path, data: bytes) -> Parsed:
    """Parse an HTML file: its main text in sections under the h1–h6 heading path.

    Navigation, headers/footers, asides, forms, scripts and styles are dropped; when the
    page has a ``<main>`` (or a single ``<article>``) only that is read.

    Args:
        path: the file, named in errors.
        data: its bytes.

    Returns:
        ``(title, sections)``: the title is ``<title>``, else the first ``<h1>``.

    Raises:
        LoadError: the bytes are not decodable text, the page holds no readable text, or
            its elements are nested too deeply.
    """
    soup = BeautifulSoup(decode_text(path, data), "lxml")
    title = _head_title(soup)
    builder = sections_from_html(path, soup)
    sections = builder.sections()
    if not sections:
        raise LoadError(path, "no readable text in HTML (only scripts/styles/navigation)")
    return title or builder.first_h1, sections


def sections_from_html(path: Path, soup: BeautifulSoup) -> SectionBuilder:
    """Walk a parsed page's main content into a `SectionBuilder`.

    Args:
        path: the file the page came from, named in errors.
        soup: the parsed page; page chrome is removed from it in place.

    Returns:
        The builder, holding the sections and the first ``<h1>`` seen.

    Raises:
        LoadError: the elements are nested too deeply to walk.
    """
    _remove_chrome(soup)
    builder = SectionBuilder()
    walker = _Walker(builder)
    try:
        walker.walk(_content_root(soup))
    except RecursionError as exc:
        raise LoadError(path, "HTML nested too deeply to read") from exc
    walker.flush()
    return builder


def _head_title(soup: BeautifulSoup) -> str | None:
    """The page's ``<head><title>``, whitespace collapsed, if any."""
    tag = soup.head.find("title") if soup.head else None
    if tag is None:
        return None
    return " ".join(tag.get_text().split()) or None


def _remove_chrome(soup: BeautifulSoup) -> None:
    """Delete every element that is page chrome rather than content."""
    doomed = soup.find_all(_DROPPED_TAGS) + soup.find_all(_is_noise)
    doomed += [tag for tag in soup.find_all(_CHROME_TAGS) if not tag.find_parent(_CONTENT_TAGS)]
    for tag in doomed:
        if not tag.decomposed:
            tag.decompose()


def _is_noise(tag: Tag) -> bool:
    """Whether the element is navigation: by role, class or id, or as a bar of in-page links."""
    if tag.name in _NEVER_NOISE:
        return False
    if tag.get("role") in _NOISE_ROLES or _is_anchor_bar(tag):
        return True
    names = [*tag.get("class", ()), tag.get("id") or ""]
    return any(
        part in _NOISE_WORDS for name in names for part in _WORD_SPLIT.split(str(name).lower())
    )


def _is_anchor_bar(tag: Tag) -> bool:
    """Whether the element is only links to anchors on the page (tab bars, mini tables of contents).

    Example: the "Python Java Go NodeJS cURL" code-tab bar above the Milvus docs' code samples.
    """
    links = 0
    for child in tag.children:
        if isinstance(child, Tag):
            if child.name != "a" or not str(child.get("href", "")).startswith("#"):
                return False
            links += 1
        elif isinstance(child, NavigableString) and child.strip():
            return False
    return links >= 2


def _content_root(soup: BeautifulSoup) -> Tag:
    """The element holding the main content: ``<main>``, a lone ``<article>``, or the body."""
    main = soup.find("main") or soup.find(attrs={"role": "main"})
    if isinstance(main, Tag):
        return main
    articles = soup.find_all("article")
    if len(articles) == 1:
        return articles[0]
    return soup.body or soup


class _Walker:
    """Turns an element tree into paragraphs: text runs, code blocks, tables and lists.

    Inline text accumulates until a block element ends the paragraph. A list (nested ones
    included) becomes one paragraph with one ``- `` / ``1. `` line per item.
    """

    def __init__(self, builder: SectionBuilder) -> None:
        self._builder = builder
        self._inline: list[str | None] = []  # None marks a <br>
        self._list_lines: list[str] | None = None  # set while inside a list
        self._list_depth = 0
        self._marker: str | None = None  # the bullet awaiting a list item's first text
        self._hang = ""  # the indent of an item's later lines, under its first

    def walk(self, node: Tag) -> None:
        """Walk the children of ``node`` in document order."""
        for child in node.children:
            if isinstance(child, Tag):
                self._element(child)
            elif isinstance(child, NavigableString) and not isinstance(child, PreformattedString):
                self._inline.append(str(child))

    def flush(self) -> None:
        """End the running paragraph of inline text."""
        if self._inline:
            parts, self._inline = self._inline, []
            self._emit(_join_inline(parts))

    def _element(self, tag: Tag) -> None:
        """Handle one element according to its kind."""
        name = tag.name
        if name == "br":
            self._inline.append(None)
        elif name in _HEADINGS:
            self.flush()
            self._heading(_HEADINGS[name], _flat_text(tag))
        elif name in ("pre", "table"):
            self.flush()
            self._emit(_code_text(tag) if name == "pre" else _table_text(tag))
        elif name in ("ul", "ol"):
            self._list(tag)
        elif name in _BLOCKS:
            self.flush()
            self.walk(tag)
            self.flush()
        else:
            self.walk(tag)

    def _heading(self, level: int, text: str) -> None:
        """A heading starts a section; inside a list it is just another line."""
        if self._list_lines is None:
            self._builder.heading(level, text)
        else:
            self._emit(text)

    def _list(self, tag: Tag) -> None:
        """Emit a list, nested lists included, as one paragraph of item lines.

        The items of a loose outermost list (items holding ``<p>`` blocks) are separated by
        blank lines instead, so each is a paragraph of its own.
        """
        self.flush()
        outermost = self._list_lines is None
        if outermost:
            self._list_lines = []
        loose = outermost and _is_loose(tag)
        self._list_depth += 1
        number = _list_start(tag)
        for child in tag.children:
            if isinstance(child, Tag) and child.name == "li":
                if loose and self._list_lines:
                    self._list_lines.append("")
                self._item(child, f"{number}. " if tag.name == "ol" else "- ")
                number += 1
            elif isinstance(child, Tag):
                self._element(child)
        self._list_depth -= 1
        if outermost and self._list_lines is not None:
            lines, self._list_lines = self._list_lines, None
            self._builder.paragraph("\n".join(lines))

    def _item(self, tag: Tag, marker: str) -> None:
        """Emit one list item: ``marker`` before its first line, the rest hung under it."""
        self.flush()
        outer_hang = self._hang
        self._marker, self._hang = marker, " " * len(marker)
        self.walk(tag)
        self.flush()
        self._marker, self._hang = None, outer_hang

    def _emit(self, text: str) -> None:
        """Add finished text as a paragraph, or as item lines while inside a list."""
        if not text:
            return
        if self._list_lines is None:
            self._builder.paragraph(text)
            return
        prefix = self._hang if self._marker is None else self._marker
        self._marker = None
        indent = "  " * (self._list_depth - 1)
        first, *rest = text.split("\n")
        self._list_lines.append(f"{indent}{prefix}{first}")
        self._list_lines.extend(f"{indent}{self._hang}{line}" for line in rest)


def _is_loose(tag: Tag) -> bool:
    """Whether a list's items hold paragraphs (``<li><p>``), as Markdown's loose lists do."""
    return any(item.find("p", recursive=False) for item in tag.find_all("li", recursive=False))


def _list_start(tag: Tag) -> int:
    """The number of an ordered list's first item (its ``start`` attribute, else 1)."""
    start = str(tag.get("start") or "1")
    return int(start) if start.isdigit() else 1


def _join_inline(parts: list[str | None]) -> str:
    """Join inline text runs: whitespace collapsed, ``<br>`` (None) kept as a line break."""
    lines: list[str] = [""]
    for part in parts:
        if part is None:
            lines.append("")
        else:
            lines[-1] += part
    return "\n".join(" ".join(line.split()) for line in lines if line.strip())


def _flat_text(tag: Tag) -> str:
    """An element's text on one line; block edges and ``<br>`` separate words."""
    return " ".join(_strings(tag).split())


def _strings(tag: Tag) -> str:
    """An element's text with a space at the edges of word-breaking descendants."""
    out: list[str] = []
    for child in tag.children:
        if isinstance(child, Tag):
            edge = " " if child.name in _WORD_BREAKS else ""
            out.append(f"{edge}{_strings(child)}{edge}")
        elif isinstance(child, NavigableString) and not isinstance(child, PreformattedString):
            out.append(str(child))
    return "".join(out)


def _code_text(pre: Tag) -> str:
    """A code block as one paragraph: its lines kept, dedented, blank lines dropped.

    Blank lines go because paragraphs are separated by blank lines downstream.
    """
    lines = [line.rstrip() for line in pre.get_text().replace("\xa0", " ").splitlines()]
    return textwrap.dedent("\n".join(line for line in lines if line))


def _table_text(table: Tag) -> str:
    """A table as one paragraph: a line per row, cells joined by " | ", empty rows dropped."""
    rows: list[str] = []
    caption = table.find("caption")
    if caption is not None:
        rows.append(_flat_text(caption))
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue  # a row of a nested table
        cells = [_flat_text(cell) for cell in row.find_all(["td", "th"], recursive=False)]
        if any(cells):
            rows.append(" | ".join(cells).rstrip())
    return "\n".join(row for row in rows if row)
