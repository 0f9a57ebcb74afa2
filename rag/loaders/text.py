"""Plain-text loader, and the section builder every loader uses to group paragraphs."""

from __future__ import annotations

import re
from pathlib import Path

from rag.loaders import Parsed
from rag.loaders.decoding import decode_text
from rag.types import Section

_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n")


class SectionBuilder:
    """Collects paragraphs, in reading order, into sections under the current heading path.

    A heading of level ``n`` replaces the earlier heading of level ``n`` and drops the
    deeper ones. A new heading or page starts a new section; sections without text are
    never emitted.
    """

    def __init__(self) -> None:
        self.first_h1: str | None = None
        self._sections: list[Section] = []
        self._headings: list[tuple[int, str]] = []
        self._paragraphs: list[str] = []
        self._page: int | None = None

    def heading(self, level: int, text: str) -> None:
        """Enter a heading of ``level`` (1 = outermost); blank headings are ignored."""
        text = " ".join(text.split())
        if not text:
            return
        self._close()
        self._headings = [(lvl, title) for lvl, title in self._headings if lvl < level]
        self._headings.append((level, text))
        if level == 1 and self.first_h1 is None:
            self.first_h1 = text

    def page(self, number: int) -> None:
        """Start the 1-based page ``number``; the heading path carries over."""
        self._close()
        self._page = number

    def paragraph(self, text: str) -> None:
        """Add one paragraph (ignored when blank) to the current section."""
        text = text.strip()
        if text:
            self._paragraphs.append(text)

    def sections(self) -> list[Section]:
        """Return every section built so far, the open one included."""
        self._close()
        return self._sections

    def _close(self) -> None:
        """Emit the open section, if it has text."""
        if self._paragraphs:
            heading = tuple(title for _, title in self._headings)
            self._sections.append(Section("\n\n".join(self._paragraphs), heading, self._page))
            self._paragraphs = []


def split_paragraphs(text: str) -> list[str]:
    """Split text on blank lines into paragraphs, trailing spaces trimmed, blanks dropped.

    Args:
        text: text with ``\\n`` line breaks.

    Returns:
        The non-empty paragraphs, each keeping its inner line breaks.
    """
    paragraphs = (
        "\n".join(line.rstrip() for line in block.splitlines()).strip("\n")
        for block in _BLANK_LINES.split(text)
    )
    return [paragraph for paragraph in paragraphs if paragraph.strip()]


def parse(path: Path, data: bytes) -> Parsed:
    """Parse a plain-text file: one untitled section, paragraphs split on blank lines.

    Args:
        path: the file, named in errors.
        data: its bytes.

    Returns:
        ``(None, sections)``: plain text has no title of its own.

    Raises:
        LoadError: the bytes are not decodable text, or hold only whitespace.
    """
    builder = SectionBuilder()
    for paragraph in split_paragraphs(decode_text(path, data)):
        builder.paragraph(paragraph)
    return None, builder.sections()
