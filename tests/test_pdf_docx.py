"""Tests of rag.loaders on PDF and DOCX files: real PDFs from shared/data and documents
written per test."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import docx
import pytest
from loader_support import FORMATS, PDF_FIXTURES, load_error, write
from pypdf import PdfReader, PdfWriter

from rag.loaders import load_document
from rag.types import Section

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
