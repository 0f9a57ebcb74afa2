"""DOCX loader (python-docx): body paragraphs and tables in order, under Heading-style paths."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import docx
from docx.document import Document as DocxDocument
from docx.table import Table
from docx.text.paragraph import Paragraph

from rag.loaders import LoadError, Parsed
from rag.loaders.text import SectionBuilder

_HEADING_STYLE = re.compile(r"heading ([1-9])", re.IGNORECASE)
_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc (and .xls, .ppt)


def parse(path: Path, data: bytes) -> Parsed:
    """Parse a Word .docx file: paragraphs and tables in body order.

    Paragraphs in "Heading 1".."Heading 9" styles build the heading path; a table
    becomes one paragraph, a line per row with its cells joined by " | ".

    Args:
        path: the file, named in errors.
        data: its bytes.

    Returns:
        ``(title, sections)``: the core-properties title, else the first "Title"-style
        or Heading 1 paragraph.

    Raises:
        LoadError: not a zip archive, not a Word document, damaged, or without text.
    """
    document = _open(path, data)
    try:
        title, sections = _read_body(document)
    except Exception as exc:  # python-docx and lxml errors on damaged content
        raise LoadError(path, f"damaged .docx ({type(exc).__name__}: {exc})") from exc
    if not sections:
        raise LoadError(path, "no text found in .docx (no paragraphs or tables with text)")
    return title, sections


def _read_body(document: DocxDocument) -> Parsed:
    """The document's title and its body as sections (possibly none)."""
    builder = SectionBuilder()
    title_paragraph: str | None = None
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            builder.paragraph(_table_text(block))
            continue
        level = _heading_level(block)
        if level is not None:
            builder.heading(level, block.text)
        elif _style_name(block) == "Title" and title_paragraph is None:
            title_paragraph = " ".join(block.text.split()) or None
        else:
            builder.paragraph(block.text)
    metadata_title = " ".join((document.core_properties.title or "").split())
    return metadata_title or title_paragraph or builder.first_h1, builder.sections()


def _open(path: Path, data: bytes) -> DocxDocument:
    """Open the bytes with python-docx, turning its failures into reasons."""
    if data.startswith(_OLE_SIGNATURE):
        raise LoadError(path, "not a valid .docx (legacy binary .doc file; save it as .docx)")
    if not data.startswith(b"PK"):
        raise LoadError(path, "not a valid .docx (not a zip archive)")
    try:
        return docx.Document(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise LoadError(path, f"not a valid .docx (damaged zip archive: {exc})") from exc
    except KeyError as exc:
        raise LoadError(path, "not a valid .docx (zip archive without a Word document)") from exc
    except ValueError as exc:  # python-docx: "... is not a Word file, content type is ..."
        raise LoadError(path, f"not a valid .docx ({exc})") from exc
    except Exception as exc:  # damaged XML and other parser errors
        raise LoadError(path, f"damaged .docx ({type(exc).__name__}: {exc})") from exc


def _style_name(paragraph: Paragraph) -> str:
    """The paragraph's style name, or "" when it has none."""
    style = paragraph.style
    if style is None:
        return ""
    return style.name or ""


def _heading_level(paragraph: Paragraph) -> int | None:
    """1..9 for a paragraph in a "Heading n" style, else None."""
    match = _HEADING_STYLE.fullmatch(_style_name(paragraph))
    return int(match.group(1)) if match else None


def _table_text(table: Table) -> str:
    """A table as lines of " | "-joined cells; a cell spanning columns counts once."""
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell is not previous:  # python-docx repeats a spanning cell's object
                cells.append(" ".join(cell.text.split()))
            previous = cell
        if any(cells):
            rows.append(" | ".join(cells).rstrip())
    return "\n".join(rows)
