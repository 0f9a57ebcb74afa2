"""What a reader sees of the Streamlit page in an AppTest run: its passages, its rendered
text, and the checks that nothing in it forms live markup."""

from __future__ import annotations

import html
import re
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block, HeadingBase, Markdown, Subheader

from rag.types import Hit

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "ui" / "app.py"
QUERY = "How do I create a sparse vector index?"
COMMONMARK = MarkdownIt("commonmark").enable(["table", "strikethrough"])
CITATION_LINK = re.compile(r'<a href="#t\d+-passage-\d+">\[\d+\]</a>')


def ask(at: AppTest, question: str) -> AppTest:
    return at.chat_input(key="question").set_value(question).run()


def rendered_text(markdown: str) -> str:
    """What a reader sees of ``markdown``: CommonMark's HTML without its tags, one line per
    displayed line, without indentation."""
    rendered = COMMONMARK.render(markdown).replace("<br />", "")
    lines = html.unescape(re.sub(r"</?(p|strong)>", "", rendered)).splitlines()
    return "\n".join(line.lstrip("\u00a0") for line in lines if line.strip())


def shown_lines(text: str) -> str:
    """A passage as the page shows it, without indentation: non-blank lines, whitespace runs
    as one space."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def shown_hits(at: AppTest) -> list[dict[str, str]]:
    """Each passage container's heading, stage caption, source caption and text, in order."""
    hits = []
    for node in at.main:
        if isinstance(node, Block) and any(
            isinstance(c, Subheader) for c in node.children.values()
        ):
            title, stages, where, text = (child.value for child in node.children.values())
            hits.append({"title": title, "stages": stages, "where": where, "text": text})
    return hits


def assert_shows(at: AppTest, expected: list[Hit]) -> None:
    """The page shows exactly ``expected`` passages, in order, with their literal fields."""
    assert not at.exception and not at.error
    shown = shown_hits(at)
    assert len(shown) == len(expected) > 0
    for hit, row in zip(expected, shown, strict=True):
        title = escapeHtml(" ".join(hit.title.split()))
        assert COMMONMARK.render(row["title"]) == f"<p>[{hit.rank}] {title}</p>\n"
        assert escapeHtml(hit.source) in COMMONMARK.render(row["where"])
        assert rendered_text(row["text"]) == shown_lines(hit.text)


def assert_no_live_markup(at: AppTest) -> None:
    """No element may render HTML, and no Markdown may form a tag or a link other than a
    citation's link to its passage."""
    assert not at.html
    for node in at:
        if isinstance(node, Markdown | HeadingBase):
            if isinstance(node, Markdown):
                assert not node.proto.allow_html
            rendered = CITATION_LINK.sub("", COMMONMARK.render(node.value))
            assert not any(tag in rendered for tag in ("<a ", "<img", "<script", "<b>", "<em>"))
