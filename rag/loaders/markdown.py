"""Markdown loader: front matter dropped, Markdown and its embedded HTML read as sectioned text."""

from __future__ import annotations

import re
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
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_PRE_OPEN = re.compile(r"<pre[\s>]", re.IGNORECASE)
_PRE_CLOSE = re.compile(r"</pre\s*>", re.IGNORECASE)
# Stands in for a blank line inside an HTML <pre>: keeps the HTML block open, reads as nothing.
_BLANK_IN_PRE = "<!-- -->"


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
        LoadError: the bytes are not decodable text, hold no body text, or their HTML is
            nested too deeply.
    """
    metadata, body = _split_front_matter(decode_text(path, data))
    html = _MARKDOWN.render(_keep_html_pre_whole(body))
    builder = sections_from_html(path, BeautifulSoup(html, "lxml"))
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


def _keep_html_pre_whole(body: str) -> str:
    """Fill blank lines inside HTML ``<pre>`` blocks so Markdown does not split them.

    CommonMark ends an HTML block that starts with e.g. ``<h3>`` at the first blank line,
    so a ``<pre>`` on the same line loses the code after its first blank line to Markdown
    (indented lines turn into code blocks that show the raw tags). The localized Milvus
    docs are full of these. Fenced code blocks are left untouched.
    """
    lines: list[str] = []
    fence: str | None = None
    open_pres = 0
    for line in body.split("\n"):
        if fence is not None or open_pres == 0:
            fence = _next_fence(line, fence)
            if fence is not None:
                lines.append(line)
                continue
        if open_pres and not line.strip():
            lines.append(_BLANK_IN_PRE)
            continue
        lines.append(line)
        if line.lstrip().startswith("<") or open_pres:
            opened = len(_PRE_OPEN.findall(line)) - len(_PRE_CLOSE.findall(line))
            open_pres = max(0, open_pres + opened)
    return "\n".join(lines)


def _next_fence(line: str, fence: str | None) -> str | None:
    """The open code fence after ``line``: its marker, or None outside a fenced block."""
    match = _FENCE.match(line)
    if fence is None:
        return match.group(1) if match else None
    closes = match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence)
    return None if closes and not line.strip().strip(fence[0]) else fence


def _title(metadata: dict[str, object]) -> str | None:
    """The front matter title when it is a non-blank string or number."""
    title = metadata.get("title")
    if isinstance(title, str | int | float):
        return " ".join(str(title).split()) or None
    return None
