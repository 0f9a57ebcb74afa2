"""Shared by the loader tests: where the real files are, and small helpers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rag.loaders import LoadError, load_document
from rag.types import Document, Section

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FORMATS = DATA / "formats"
PDF_FIXTURES = FORMATS / "pdf" / "pypdf_fixtures"
MILVUS_EN = DATA / "milvus_docs" / "web-content_v2.6.x_en" / "site" / "en"
RAW_TAG = re.compile(r"</?(div|img|a|span|br|p|h[1-6]|svg|button|table|td|tr)\b[^>]*>", re.I)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    """Write ``content`` (str as UTF-8) to ``tmp_path / name`` and return the path."""
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def load_error(path: Path, **kwargs: int) -> LoadError:
    """Load ``path``, expecting a LoadError, and return it."""
    with pytest.raises(LoadError) as caught:
        load_document(path, **kwargs)
    return caught.value


def section(document: Document, heading: tuple[str, ...]) -> Section:
    """The first section of ``document`` under exactly ``heading``."""
    return next(s for s in document.sections if s.heading == heading)


def all_text(document: Document) -> str:
    """Every section's text, joined."""
    return "\n\n".join(s.text for s in document.sections)
