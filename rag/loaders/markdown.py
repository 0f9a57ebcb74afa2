"""Markdown loader: front matter dropped, Markdown and its embedded HTML read as sectioned text."""

from __future__ import annotations

from pathlib import Path

import frontmatter
import yaml
from bs4 import BeautifulSoup
from markdown_it import MarkdownIt

from rag.loaders import LoadError, Parsed
from rag.loaders.decoding import decode_text
from rag.loaders.html import sections_from_html

# CommonMark with raw HTML allowed, plus GitHub tables and strikethrough.
_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def parse(path: Path, data: bytes) -> Parsed:
    """Parse a Markdown file into sections under its heading path.

    The Markdown is rendered to HTML with markdown-it-py and that HTML is walked like a
    web page, so Markdown headings and ``<h1>``–``<h6>`` in HTML blocks both build the
    heading path, HTML blocks and inline HTML become their text, and files that are
    whole HTML documents under a front matter read as well as real Markdown.

    Args:
        path: the file, named in errors.
        data: its bytes.

    Returns:
        ``(title, sections)``: the front matter ``title``, else the first H1.

    Raises:
        LoadError: the bytes are not decodable text, or hold no body text.
    """
    metadata, body = _split_front_matter(decode_text(path, data))
    builder = sections_from_html(BeautifulSoup(_MARKDOWN.render(body), "lxml"))
    sections = builder.sections()
    if not sections:
        raise LoadError(path, "no text found (only front matter, headings or markup)")
    return _title(metadata) or builder.first_h1, sections


def _split_front_matter(text: str) -> tuple[dict[str, object], str]:
    """Separate YAML front matter from the body; broken YAML is dropped without metadata."""
    try:
        return frontmatter.parse(text)
    except yaml.YAMLError:
        _, body = frontmatter.YAMLHandler().split(text.strip())
        return {}, body


def _title(metadata: dict[str, object]) -> str | None:
    """The front matter title when it is a non-blank string or number."""
    title = metadata.get("title")
    if isinstance(title, str | int | float):
        return " ".join(str(title).split()) or None
    return None
