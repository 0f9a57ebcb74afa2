"""Tests of rag.loaders on real files from shared/data and on small files made per test: the
public API, paths that are not loadable files, decoding, plain text, Markdown and HTML (PDF and
DOCX: test_pdf_docx.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from loader_support import (
    FORMATS,
    MILVUS_EN,
    RAW_TAG,
    all_text,
    load_error,
    section,
    write,
)

from rag.loaders import SUPPORTED_SUFFIXES, load_document
from rag.types import Section

# --- the public API -------------------------------------------------------------------------


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf",
                                  ".docx"}  # fmt: skip


def test_load_error_carries_path_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.md", b"")
    error = load_error(path)
    assert error.path == path
    assert error.reason == "empty file"
    assert str(error) == f"{path}: empty file"


def test_suffix_is_case_insensitive_and_source_is_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "NOTES.MD", "# Notes\n\nSome text.\n")
    document = load_document(path)
    assert document.source == str(path)
    assert document.title == "Notes"
    assert document.sections == [Section("Some text.", ("Notes",))]


# --- paths that are not loadable files ---------------------------------------------------


def test_unsupported_suffix(tmp_path: Path) -> None:
    error = load_error(write(tmp_path, "data.xyz", "text"))
    assert error.reason.startswith("unsupported file type (.xyz); supported: .docx .htm")


def test_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path).reason == "is a directory, not a file"


def test_missing_file(tmp_path: Path) -> None:
    assert load_error(tmp_path / "gone.md").reason == "file not found (vanished?)"


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.md"
    link.symlink_to(tmp_path / "missing.md")
    assert load_error(link).reason == "broken symlink (target missing)"


def test_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.md").symlink_to(tmp_path / "b.md")
    (tmp_path / "b.md").symlink_to(tmp_path / "a.md")
    assert load_error(tmp_path / "a.md").reason == "symlink loop"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.txt", "hidden")
    path.chmod(0)
    assert load_error(path).reason == "permission denied"


def test_size_cap_refuses_before_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "big.txt", "x" * 2_500)
    assert load_error(path, max_bytes=1_000).reason == "file too large: 2.5 kB > 1.0 kB cap"


def test_default_size_cap_on_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.pdf"
    with path.open("wb") as handle:
        handle.truncate(61_200_000)  # sparse: no disk used, nothing read
    assert load_error(path).reason == "file too large: 61.2 MB > 50.0 MB cap"


# --- decoding ------------------------------------------------------------------------------


def test_empty_and_whitespace_only(tmp_path: Path) -> None:
    assert load_error(write(tmp_path, "empty.txt", b"")).reason == "empty file"
    blank = write(tmp_path, "blank.md", " \n\t\r\n  \n")
    assert load_error(blank).reason == "no text found (whitespace only)"


def test_png_named_markdown_is_binary(tmp_path: Path) -> None:
    path = write(tmp_path, "image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    assert load_error(path).reason == "binary content (looks like PNG image), not text"


def test_nul_bytes_are_binary(tmp_path: Path) -> None:
    path = write(tmp_path, "data.txt", b"abc\x00\x01\x02def")
    assert load_error(path).reason == "binary content (contains NUL bytes), not text"


def test_latin1_and_cp1252_text(tmp_path: Path) -> None:
    latin1 = write(tmp_path, "latin1.txt", "café au lait\n".encode("latin-1"))
    assert load_document(latin1).sections[0].text == "café au lait"
    cp1252 = write(tmp_path, "cp1252.txt", "naïve “quoted” résumé — done\n".encode("cp1252"))
    assert load_document(cp1252).sections[0].text == "naïve “quoted” résumé — done"


def test_utf16_and_utf8_byte_order_marks(tmp_path: Path) -> None:
    utf16 = write(tmp_path, "utf16.txt", "Grüße\n\nПривет".encode("utf-16"))
    assert [s.text for s in load_document(utf16).sections] == ["Grüße\n\nПривет"]
    utf8 = write(tmp_path, "bom.md", b"\xef\xbb\xbf# Title\n\nBody\n")
    document = load_document(utf8)
    assert document.title == "Title"
    assert document.sections[0].text == "Body"


def test_utf8_with_a_few_damaged_bytes_keeps_its_text(tmp_path: Path) -> None:
    data = "Привет, мир. Grüße.\n".encode() * 5 + b"caf\xe9 noir\n"
    text = load_document(write(tmp_path, "mixed.txt", data)).sections[0].text
    assert text.startswith("Привет, мир. Grüße.\nПривет") and text.endswith("caf\ufffd noir")
    # Mostly damaged "UTF-8" is not taken for it: Windows-1252 text with one "é" in UTF-8.
    legacy = "crème brûlée à la carte, déjà vu ".encode("cp1252") + "é".encode()
    document = load_document(write(tmp_path, "legacy.txt", legacy))
    assert document.sections[0].text.startswith("crème brûlée à la carte, déjà vu")


def test_mac_roman_mojibake_is_repaired() -> None:
    document = load_document(FORMATS / "mojibake" / "pymilvus-blog.ru.md")
    assert document.title == "Представление интеграции PyMilvus с моделями встраивания"
    text = all_text(document)
    assert "векторная база данных с открытым исходным кодом" in text
    assert "–ü" not in text and "—ç" not in text
    assert any("Плотные и разреженные вкрапления" in s.heading for s in document.sections)


# --- plain text ----------------------------------------------------------------------------


def test_text_paragraphs_split_on_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.text", "First line\r\nsame paragraph  \r\n\r\n \r\nSecond\n")
    document = load_document(path)
    assert document.title == "notes"
    assert document.sections == [Section("First line\nsame paragraph\n\nSecond")]


# --- Markdown ------------------------------------------------------------------------------


def test_milvus_page_title_headings_and_no_tags() -> None:
    document = load_document(MILVUS_EN / "getstarted" / "quickstart.md")
    assert document.title == "Quickstart"  # front matter, not the H1
    install = section(document, ("Quickstart with Milvus Lite", "Install Milvus"))
    assert "$ pip install -U pymilvus" in install.text.split("\n\n")
    assert "you may need to restart the runtime" in install.text  # from a <div> block
    text = all_text(document)
    assert not RAW_TAG.search(text)
    assert "Open In Colab" not in text  # image alt text of a badge
    assert all(s.page is None for s in document.sections)


def test_milvus_page_markdown_table() -> None:
    document = load_document(MILVUS_EN / "about" / "limitations.md")
    assert document.title == "Milvus Limits"
    table = section(document, ("Milvus Limits", "Number of resources in a collection")).text
    assert table.split("\n") == [
        "Resource | Limit",
        "Partition | 1,024",
        "Shard | 16",
        "Field | 64",
        "Index | 1",
        "Entity | unlimited",
    ]


def test_milvus_prompt_page_fenced_block_stays_code() -> None:
    document = load_document(MILVUS_EN / "aiTools" / "index_selection.md")
    assert document.title == "Prompt: Milvus Index Selection"
    prompt = section(document, ("Index Selection", "Full prompt")).text
    # The whole prompt is one ````text fence: its "## Rules" and tables are not parsed.
    assert "\n## Rules\n" in prompt
    assert "| Index | Best for | Key parameters | Tradeoffs |" in prompt


def test_markdown_heading_path_and_code_block(tmp_path: Path) -> None:
    source = (
        "---\ntitle: From Front Matter\ntags: [a, b]\n---\n"
        "Intro before headings.\n\n# Guide\n\n## Install\n\n### Linux\n\nUse apt.\n\n"
        "```python\nimport os\n\n\nprint(os.sep)\n```\n\n## Usage\n\n- one\n- two\n  1. nested\n"
    )
    document = load_document(write(tmp_path, "guide.md", source))
    assert document.title == "From Front Matter"
    assert [s.heading for s in document.sections] == [
        (),
        ("Guide", "Install", "Linux"),
        ("Guide", "Usage"),
    ]
    assert document.sections[0].text == "Intro before headings."
    assert document.sections[1].text == "Use apt.\n\nimport os\nprint(os.sep)"
    assert document.sections[2].text == "- one\n- two\n  1. nested"


def test_markdown_loose_list_items_are_paragraphs(tmp_path: Path) -> None:
    source = "- First item.\n\n  Its second paragraph.\n\n- Second item.\n"
    document = load_document(write(tmp_path, "loose.md", source))
    assert document.sections == [
        Section("- First item.\n  Its second paragraph.\n\n- Second item.")
    ]


def test_markdown_title_falls_back_to_h1_then_stem(tmp_path: Path) -> None:
    assert (
        load_document(write(tmp_path, "a.md", "Text\n\n# First H1\n\nMore\n")).title == "First H1"
    )
    assert load_document(write(tmp_path, "b.markdown", "## Only H2\n\nText\n")).title == "b"


def test_markdown_inline_and_block_html(tmp_path: Path) -> None:
    source = (
        '# Page\n\n<div class="alert note">\n<p>Note <b>bold</b> text</p>\n</div>\n\n'
        'Line one<br/>line two with <a href="x">a link</a> <img src="i.png" alt="pic"/>\n\n'
        '<h2 id="s">Html Heading<button>copy</button></h2>\n\n<script>var x = 1;</script>\n\n'
        "<table><tr><th>Key</th><th>Value</th></tr><tr><td>a</td><td>1</td></tr></table>\n"
    )
    document = load_document(write(tmp_path, "html.md", source))
    assert document.sections == [
        Section("Note bold text\n\nLine one\nline two with a link", ("Page",)),
        Section("Key | Value\na | 1", ("Page", "Html Heading")),
    ]


def test_markdown_html_pre_with_blank_lines(tmp_path: Path) -> None:
    source = (
        "<h2>Code</h2><pre><code>def f():\n\n    return 1\n</code></pre>\n\nAfter.\n\n"
        "```html\n<pre>\n\n## Not a heading\n```\n\n## Real heading\n\nText.\n"
    )
    document = load_document(write(tmp_path, "pre.md", source))
    assert document.sections == [
        Section("def f():\n    return 1\n\nAfter.\n\n<pre>\n## Not a heading", ("Code",)),
        Section("Text.", ("Real heading",)),
    ]


def test_markdown_with_broken_front_matter(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.md", "---\ntitle: [unclosed\n---\nBody text.\n")
    document = load_document(path)
    assert document.title == "broken"
    assert document.sections == [Section("Body text.")]


def test_markdown_without_body_text(tmp_path: Path) -> None:
    path = write(tmp_path, "front.md", "---\ntitle: Only\n---\n# Heading\n")
    assert load_error(path).reason == "no text found (only front matter, headings or markup)"


def test_markdown_that_is_really_html() -> None:
    document = load_document(FORMATS / "html" / "milvus_localized_zh" / "full-text-search.md")
    assert document.title == "全文搜索"
    assert section(document, ("全文搜索", "BM25 实施")).text.startswith("Milvus 提供由 BM25")
    text = all_text(document)
    assert not RAW_TAG.search(text)
    assert "M4 9h1v1H4c" not in text  # svg path data of the anchor buttons
    assert "Python Java Go NodeJS cURL" not in text  # code-tab bar of in-page links
    # A <pre> with blank lines inside an HTML block stays one code block, indentation kept.
    assert 'client = MilvusClient(\n    uri="http://localhost:19530",\n' in text


# --- HTML ----------------------------------------------------------------------------------


def test_sqlite_page_main_text_and_headings() -> None:
    document = load_document(FORMATS / "html" / "sqlite" / "wal.html")
    assert document.title == "Write-Ahead Logging"
    checkpointing = section(document, ("2. How WAL Works", "2.1. Checkpointing"))
    assert 'called a "checkpoint"' in checkpointing.text
    overview = section(document, ("1. Overview",)).text
    assert "1. WAL is significantly faster in most scenarios.\n2. WAL provides" in overview
    text = all_text(document)
    for chrome in ("Small. Fast. Reliable.", "Table Of Contents", "toggle_div", "Documentation"):
        assert chrome not in text
    assert "PRAGMA journal_mode=DELETE;" in section(document, ("10. Backwards Compatibility",)).text


def test_scons_page_latin1_code_and_no_navigation() -> None:
    document = load_document(FORMATS / "html" / "scons" / "ch02.html")
    assert document.title == "Chapter 2. Simple Builds"  # ISO-8859-1 no-break space folded
    body = section(document, ("2.1. Building Simple C / C++ Programs",)).text
    assert 'int\nmain()\n{\n    printf("Hello, world!\\n");\n}' in body.split("\n\n")
    text = all_text(document)
    assert "Prev" not in text and "Next" not in text


def test_html_main_content_and_chrome(tmp_path: Path) -> None:
    page = (
        "<html><head><title> My  Page </title><style>p {color: red}</style></head><body>"
        "<header><a href='/'>Home</a></header><nav><ul><li>Menu item</li></ul></nav>"
        "<div class='sidebar'>Side links</div><main><article><header><h1>Main Title</h1>"
        "</header><p>Body   text\nhere.</p><aside>Related</aside><h2>Part</h2>"
        "<pre>  x = 1\n\n  y = 2</pre></article></main><footer>Copyright</footer></body></html>"
    )
    document = load_document(write(tmp_path, "page.htm", page))
    assert document.title == "My Page"
    assert document.sections == [
        Section("Body text here.", ("Main Title",)),
        Section("x = 1\ny = 2", ("Main Title", "Part")),
    ]


def test_html_title_falls_back_to_h1(tmp_path: Path) -> None:
    document = load_document(write(tmp_path, "t.html", "<h1>Heading One</h1><p>x</p>"))
    assert document.title == "Heading One"


def test_html_with_only_scripts(tmp_path: Path) -> None:
    page = "<html><head><script>alert(1)</script></head><body><style>b{}</style></body></html>"
    reason = load_error(write(tmp_path, "s.html", page)).reason
    assert reason == "no readable text in HTML (only scripts/styles/navigation)"


def test_html_nested_too_deeply(tmp_path: Path) -> None:
    path = write(tmp_path, "deep.html", "<div>" * 3000 + "text" + "</div>" * 3000)
    assert load_error(path).reason == "HTML nested too deeply to read"
