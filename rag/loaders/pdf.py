"""PDF loader (pypdf): the text layer page by page, under the outline's heading path."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ftfy
from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import PyPdfError

from rag.loaders import LoadError, Parsed
from rag.loaders.text import SectionBuilder, split_paragraphs

# Ligatures ("ﬁ") are folded so words match queries; quotes and widths are left alone.
_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False, fix_character_width=False, uncurl_quotes=False, explain=False
)
# Metadata titles that name a tool's default or a file, not the document.
_JUNK_TITLE = re.compile(
    r"^(untitled\b|microsoft \w+ - )|\.(pdf|docx?|odt|rtf|tex|dvi|indd|pptx?)$", re.IGNORECASE
)
# A heading line may carry a number before the outline's title: "5.1. Builder Methods".
_MAX_HEADING_PREFIX = 12
# pypdf's logger is switched to collecting while a PDF is parsed; one PDF at a time.
_PYPDF_LOGGER = logging.getLogger("pypdf")
_LOGGER_LOCK = threading.Lock()

Outline = dict[int, list[tuple[int, str]]]  # 0-based page -> (level, title) starting there
# What a damaged outline raises; it costs only the heading paths, not the text.
_OUTLINE_ERRORS = (PyPdfError, AttributeError, IndexError, KeyError, TypeError, ValueError)


def parse(path: Path, data: bytes) -> Parsed:
    """Parse a PDF: one section per page (more where outline headings start), page kept.

    The heading path comes from the PDF's outline (bookmarks) when it has one: a page
    is split where an outline title's line is found on it. pypdf's warnings about
    damaged files are collected rather than logged and show up in the error reason.

    Args:
        path: the file, named in errors.
        data: its bytes.

    Returns:
        ``(title, sections)``: the title is the metadata title unless it is a
        placeholder ("Untitled", a file name); every section has its 1-based page.

    Raises:
        LoadError: not a PDF, password-protected, truncated or corrupt, or without any
            text on any page (a scan without a text layer).
    """
    if b"%PDF-" not in data[:1024]:
        raise LoadError(path, "not a PDF (no %PDF- header)")
    with _collected_pypdf_warnings() as warnings:
        try:
            return _parse(path, data)
        except LoadError:
            raise
        except Exception as exc:  # pypdf raises many kinds of errors on damaged files
            raise LoadError(path, _corrupt_reason(exc, warnings)) from exc


def _parse(path: Path, data: bytes) -> Parsed:
    """Read the pages' text and outline; errors from pypdf propagate."""
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise LoadError(path, "PDF is password-protected")
    outline = _outline(reader)
    builder = SectionBuilder()
    for index, page in enumerate(reader.pages):
        builder.page(index + 1)
        _add_page(builder, _page_lines(page), outline.get(index, []))
    sections = builder.sections()
    if not sections:
        raise LoadError(path, "PDF has no text layer (scanned image?)")
    return _metadata_title(reader), sections


def _corrupt_reason(exc: Exception, warnings: list[str]) -> str:
    """The reason for a PDF pypdf failed on, with its first warning when it gave one."""
    reason = f"truncated or corrupt PDF: {exc or type(exc).__name__}"
    return f"{reason} ({warnings[0]})" if warnings else reason


@contextmanager
def _collected_pypdf_warnings() -> Iterator[list[str]]:
    """Collect pypdf's log warnings for the duration instead of letting them print."""
    collector = _Collector()
    with _LOGGER_LOCK:
        propagate = _PYPDF_LOGGER.propagate
        _PYPDF_LOGGER.addHandler(collector)
        _PYPDF_LOGGER.propagate = False
        try:
            yield collector.messages
        finally:
            _PYPDF_LOGGER.removeHandler(collector)
            _PYPDF_LOGGER.propagate = propagate


class _Collector(logging.Handler):
    """A logging handler that keeps the messages of warnings and errors."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's message."""
        self.messages.append(record.getMessage())


def _outline(reader: PdfReader) -> Outline:
    """The outline's entries by the page they start on; empty when it is missing or broken."""
    starts: Outline = defaultdict(list)
    try:
        _walk_outline(reader, reader.outline, 1, starts)
    except _OUTLINE_ERRORS:
        return {}
    return starts


def _walk_outline(reader: PdfReader, items: list, level: int, starts: Outline) -> None:
    """Add outline ``items`` (a nested list follows its parent entry) to ``starts``."""
    for item in items:
        if isinstance(item, list):
            _walk_outline(reader, item, level + 1, starts)
            continue
        page = reader.get_destination_page_number(item)
        title = " ".join(str(item.title or "").split())
        if page is not None and page >= 0 and title:
            starts[page].append((level, title))


def _page_lines(page: PageObject) -> list[str]:
    """The page's text lines, ligatures and mojibake repaired."""
    return ftfy.fix_text(page.extract_text(), _FTFY_CONFIG).splitlines()


def _add_page(builder: SectionBuilder, lines: list[str], headings: list[tuple[int, str]]) -> None:
    """Add a page's lines, entering each outline heading at the line that shows its title.

    A title not found on the page starts where the previous heading did.
    """
    start = 0
    for level, title in headings:
        at = _title_line(lines, title, start)
        _add_lines(builder, lines[start:at])
        builder.heading(level, title)
        start = at
    _add_lines(builder, lines[start:])


def _add_lines(builder: SectionBuilder, lines: list[str]) -> None:
    """Add lines of page text as paragraphs (split where pypdf left blank lines)."""
    for paragraph in split_paragraphs("\n".join(lines)):
        builder.paragraph(paragraph)


def _title_line(lines: list[str], title: str, start: int) -> int:
    """Index of the first line from ``start`` showing ``title`` (alone, or after a number)."""
    wanted = _fold(title)
    for index in range(start, len(lines)):
        joined = " ".join(lines[index : index + 2])  # long titles wrap onto a second line
        if any(_shows_title(_fold(text), wanted) for text in (lines[index], joined)):
            return index
    return start


def _shows_title(line: str, title: str) -> bool:
    """Whether a folded line is the folded title, perhaps after a short prefix."""
    if line == title:
        return True
    return line.endswith(" " + title) and len(line) - len(title) <= _MAX_HEADING_PREFIX


def _fold(text: str) -> str:
    """Text with whitespace collapsed and case folded, for comparing titles."""
    return " ".join(text.split()).casefold()


def _metadata_title(reader: PdfReader) -> str | None:
    """The document-information title, unless blank or a placeholder."""
    metadata = reader.metadata
    title = " ".join(str(metadata.title or "").split()) if metadata else ""
    return title if title and not _JUNK_TITLE.search(title) else None
