"""Tests of rag.loaders on real files from shared/data and on small files made per test."""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from rag.loaders import SUPPORTED_SUFFIXES, LoadError, load_document
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


# --- PDF -----------------------------------------------------------------------------------


def test_pdf_page_numbers_on_real_pdf() -> None:
    document = load_document(PDF_FIXTURES / "Seige_of_Vicksburg_Sample_OCR.pdf")
    assert document.title == "Seige_of_Vicksburg_Sample_OCR"  # metadata "Binder1.pdf" ignored
    assert [s.page for s in document.sections] == [1, 2, 3, 4, 5, 6]

    def page_of(phrase: str) -> int | None:
        return next(s.page for s in document.sections if phrase in s.text)

    assert page_of("buried itself in tie earth") == 2
    assert page_of("I have a great curiosity to") == 3
    assert page_of("watched the beauty above") == 6


def test_pdf_outline_builds_heading_paths() -> None:
    document = load_document(PDF_FIXTURES / "pdflatex-outline.pdf")
    starts = [(s.page, s.heading, s.text.split("\n")[0]) for s in document.sections]
    assert starts[0] == (1, (), "Contents")
    assert (2, ("Foo",), "1 Foo") in starts
    assert (2, ("Bar",), "2 Bar") in starts
    assert (3, ("Bar",), "5 Bar") in starts
    assert (4, ("Baz",), "9 Baz") in starts
    # The top of page 3 still belongs to section 4 (Foo), begun on page 2.
    assert starts[starts.index((3, ("Bar",), "5 Bar")) - 1][:2] == (3, ("Foo",))


def test_pdf_ligatures_are_folded() -> None:
    document = load_document(PDF_FIXTURES / "crazyones.pdf")
    assert "The misfits. The rebels." in document.sections[0].text


@pytest.mark.parametrize("name", ["encrypted-file.pdf", "libreoffice-writer-password.pdf"])
def test_password_protected_pdf(name: str) -> None:
    assert load_error(PDF_FIXTURES / name).reason == "PDF is password-protected"


def test_pdf_with_empty_user_password_loads(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=PDF_FIXTURES / "crazyones.pdf")
    writer.add_metadata({"/Title": "The Crazy Ones"})
    writer.encrypt(user_password="", owner_password="owner-secret", algorithm="AES-128")
    path = tmp_path / "open.pdf"
    writer.write(path)
    assert PdfReader(path).is_encrypted
    document = load_document(path)
    assert document.title == "The Crazy Ones"
    assert "Here" in document.sections[0].text


def test_pdf_without_text_layer() -> None:
    reason = load_error(PDF_FIXTURES / "git.pdf").reason
    assert reason == "PDF has no text layer (scanned image?)"


def test_truncated_pdf_is_reported_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = (FORMATS / "pdf" / "sqlite-copyright-release.pdf").read_bytes()
    path = write(tmp_path, "cut.pdf", data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        reason = load_error(path).reason
    assert reason.startswith("truncated or corrupt PDF: ")
    assert "EOF marker not found" in reason
    assert not [record for record in caplog.records if record.name.startswith("pypdf")]


def test_pdf_placeholder_metadata_title_is_ignored() -> None:
    document = load_document(PDF_FIXTURES / "two-different-pages.pdf")  # "Untitled document"
    assert document.title == "two-different-pages"


def test_not_a_pdf(tmp_path: Path) -> None:
    path = write(tmp_path, "page.pdf", "<html><body>Not found</body></html>")
    assert load_error(path).reason == "not a PDF (no %PDF- header)"


# --- DOCX ----------------------------------------------------------------------------------


def make_docx(path: Path, title: str = "") -> Path:
    """A real .docx written by python-docx: headings, paragraphs and a merged-cell table."""
    document = docx.Document()
    document.core_properties.title = title
    document.add_paragraph("Setup Guide", style="Title")
    document.add_paragraph("Before any heading.")
    document.add_heading("Install", level=1)
    document.add_paragraph("Run the installer.")
    document.add_heading("Linux", level=2)
    document.add_paragraph("Use the package manager.")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([["OS", "Command", ""], ["Debian", "apt install x", "root"],
                             ["Fedora", "dnf install x", ""]]):  # fmt: skip
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(0, 1).merge(table.cell(0, 2))
    document.add_heading("Usage", level=1)
    document.add_paragraph("Call it.")
    document.save(path)
    return path


def test_docx_headings_and_table(tmp_path: Path) -> None:
    document = load_document(make_docx(tmp_path / "guide.docx"))
    assert document.title == "Setup Guide"  # no core title: the Title-style paragraph
    assert document.sections == [
        Section("Before any heading.", ()),
        Section("Run the installer.", ("Install",)),
        Section(
            "Use the package manager.\n\nOS | Command\nDebian | apt install x | root\n"
            "Fedora | dnf install x |",
            ("Install", "Linux"),
        ),
        Section("Call it.", ("Usage",)),
    ]


def test_docx_core_properties_title(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "titled.docx", title="Core Title")
    assert load_document(path).title == "Core Title"


def test_docx_not_a_zip(tmp_path: Path) -> None:
    path = write(tmp_path, "fake.docx", "just some text")
    assert load_error(path).reason == "not a valid .docx (not a zip archive)"


def test_docx_zip_without_word_document(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hello")
    path = write(tmp_path, "archive.docx", buffer.getvalue())
    assert load_error(path).reason == "not a valid .docx (zip archive without a Word document)"


def test_legacy_doc_named_docx(tmp_path: Path) -> None:
    path = write(tmp_path, "old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512))
    reason = load_error(path).reason
    assert reason == "not a valid .docx (legacy binary .doc file; save it as .docx)"


def test_docx_with_damaged_xml(tmp_path: Path) -> None:
    good = make_docx(tmp_path / "good.docx").read_bytes()
    damaged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(damaged, "w") as target:
        for name in source.namelist():
            part = source.read(name)
            target.writestr(name, part[: len(part) // 2] if name == "word/document.xml" else part)
    reason = load_error(write(tmp_path, "bad.docx", damaged.getvalue())).reason
    assert reason.startswith("damaged .docx (XMLSyntaxError: ")
