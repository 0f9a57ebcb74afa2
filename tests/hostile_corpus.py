"""A corpus of bad and awkward files beside good ones, for the hostile-input test of ingest.

`build_hostile_corpus` writes it under a folder and returns one `Case` per file or path with
the outcome ``python -m ingest`` must give it. Real files come from ``shared/data`` (the
sibling of the repo) and are copied into the folder; the rest is generated. Build it by hand
with ``python scripts/make_hostile_corpus.py FOLDER``.
"""

from __future__ import annotations

import base64
import codecs
import io
import os
import random
import shutil
import stat
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import docx
import ftfy.bad_codecs  # noqa: F401 - registers the "sloppy-windows-1252" codec
from pypdf import PdfReader

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MILVUS_DOCS_EN = SHARED_DATA / "milvus_docs" / "web-content_v2.6.x_en" / "site" / "en"
FORMATS = SHARED_DATA / "formats"
PDF_FIXTURES = FORMATS / "pdf" / "pypdf_fixtures"

# The default size cap of `python -m ingest` (RAG_MAX_FILE_MB = 50).
SIZE_CAP_BYTES = 50_000_000
RUSSIAN = "Представление интеграции PyMilvus с моделями встраивания"


class Expect(StrEnum):
    """What ingest must do with a case."""

    INGESTED = "ingested"  # stored; its chunks' text holds `Case.detail`
    FAILED = "failed"  # one line "failed PATH: REASON", REASON holding `Case.detail`
    SKIPPED = "skipped"  # left out by the walk; `Case.detail` is the Discovery.skipped key
    PATH_ERROR = "path error"  # one line "error PATH: REASON", REASON holding `Case.detail`


@dataclass(frozen=True)
class Case:
    """One file or path of the corpus and the outcome it must get.

    Attributes:
        kind: what is hostile (or good) about it.
        path: its absolute path.
        expect: the outcome.
        detail: a phrase of the stored text (INGESTED), a substring of the reason (FAILED,
            PATH_ERROR) or the skip reason (SKIPPED).
        given: passed to ingest as a PATH of its own rather than found in the corpus folder.
    """

    kind: str
    path: Path
    expect: Expect
    detail: str
    given: bool = False


def corpus_folder(root: Path) -> Path:
    """The folder that `build_hostile_corpus` fills and ingest walks."""
    return root / "corpus"


def ingest_paths(root: Path, cases: list[Case]) -> list[Path]:
    """The PATH arguments to ingest the corpus with: its folder, then every given path."""
    return [corpus_folder(root), *(case.path for case in cases if case.given)]


def build_hostile_corpus(root: Path) -> list[Case]:
    """Write the corpus under ``root`` (created if needed; must not hold a corpus yet).

    Good files (real Milvus pages, a real PDF and HTML page, a generated .docx) and hostile
    ones go into ``corpus_folder(root)``; paths given to ingest directly go into
    ``root / "loose"``. The unreadable file and folder are made only when not running as
    root (root reads anything).

    Returns:
        Every case, the good files included (expected INGESTED).
    """
    folder = corpus_folder(root)
    folder.mkdir(parents=True)
    loose = root / "loose"
    loose.mkdir()
    cases: list[Case] = []

    def add(kind: str, name: str | Path, expect: Expect, detail: str, **kw: bool) -> Path:
        path = name if isinstance(name, Path) else folder / name
        cases.append(Case(kind, path, expect, detail, **kw))
        return path

    def write(kind: str, name: str, data: bytes | str, expect: Expect, detail: str) -> Path:
        path = add(kind, name, expect, detail)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def copy(kind: str, source: Path, name: str, expect: Expect, detail: str) -> Path:
        path = add(kind, name, expect, detail)
        shutil.copyfile(source, path)
        return path

    ok, failed = Expect.INGESTED, Expect.FAILED
    guide = MILVUS_DOCS_EN / "userGuide"

    # Good files: real pages and documents.
    copy(
        "good: Markdown page",
        guide / "indexes" / "floating-vector" / "flat.md",
        "flat.md",
        ok,
        "FLAT index",
    )
    copy(
        "good: Markdown page",
        guide / "schema" / "sparse_vector.md",
        "sparse_vector.md",
        ok,
        "Sparse vectors",
    )
    copy(
        "good: PDF",
        FORMATS / "pdf" / "sqlite-copyright-release.pdf",
        "sqlite-copyright.pdf",
        ok,
        "embeddable SQL database engine",
    )
    copy(
        "good: HTML page",
        FORMATS / "html" / "sqlite" / "whentouse.html",
        "sqlite-whentouse.html",
        ok,
        "SQLite is trying to solve a different problem",
    )
    _docx(add("good: .docx", "setup-guide.docx", ok, "Run the installer with sudo."))

    # Empty and binary content.
    write("0-byte file", "empty.md", b"", failed, "empty file")
    write(
        "whitespace only", "blank.txt", " \n\t\r\n   \n", failed, "no text found (whitespace only)"
    )
    write(
        "binary: image named .md (PNG from git.pdf)",
        "image.md",
        _png(),
        failed,
        "binary content (looks like PNG image), not text",
    )
    copy(
        "binary: executable named .md (/bin/true)",
        Path("/bin/true"),
        "program.md",
        failed,
        "binary content (looks like ELF executable), not text",
    )
    write(
        "binary: NUL bytes in a .txt",
        "records.txt",
        b"id\x00name\x00\x01\x02\x03",
        failed,
        "binary content (contains NUL bytes), not text",
    )

    # PDFs.
    data = (FORMATS / "pdf" / "scons-user-guide.pdf").read_bytes()
    write(
        "truncated PDF (first half of a real one)",
        "truncated.pdf",
        data[: len(data) // 2],
        failed,
        "truncated or corrupt PDF: ",
    )
    copy(
        "password-protected PDF (pypdf fixture)",
        PDF_FIXTURES / "encrypted-file.pdf",
        "encrypted.pdf",
        failed,
        "PDF is password-protected",
    )
    copy(
        "password-protected PDF (LibreOffice)",
        PDF_FIXTURES / "libreoffice-writer-password.pdf",
        "libreoffice-password.pdf",
        failed,
        "PDF is password-protected",
    )
    copy(
        "PDF without a text layer (scanned image)",
        PDF_FIXTURES / "git.pdf",
        "scan.pdf",
        failed,
        "PDF has no text layer (scanned image?)",
    )
    write(
        "not a PDF (HTML saved as .pdf)",
        "error-page.pdf",
        "<html><body>404 Not Found</body></html>",
        failed,
        "not a PDF (no %PDF- header)",
    )
    path = add(
        "file over the size cap (sparse, 52.4 MB)",
        "huge.pdf",
        failed,
        "file too large: 52.4 MB > 50.0 MB cap",
    )
    with path.open("wb") as handle:
        handle.truncate(52_400_000)  # sparse: no disk used, never read

    # Encodings: the text is saved.
    accented = "Café au lait, crème brûlée à la carte, déjà vu."
    write(
        "UTF-16 with BOM",
        "utf16.txt",
        f"Grüße aus Köln.\n\n{RUSSIAN}.\n".encode("utf-16"),
        ok,
        RUSSIAN,
    )
    write("Latin-1", "latin1.txt", f"{accented}\n".encode("latin-1"), ok, accented)
    write(
        "invalid UTF-8 (a stray Latin-1 byte in UTF-8 text)",
        "mixed-encoding.md",
        f"# Заметки\n\n{RUSSIAN}.\n\nUn caf".encode() + b"\xe9" + b" noir.\n",
        ok,
        f"{RUSSIAN}.\n\nUn caf\N{REPLACEMENT CHARACTER} noir.",
    )
    copy(
        "mojibake: UTF-8 read as Mac Roman (real file)",
        FORMATS / "mojibake" / "pymilvus-blog.ru.md",
        "pymilvus-blog.ru.md",
        ok,
        "векторная база данных с открытым исходным кодом",
    )
    write(
        "mojibake: UTF-8 read as Windows-1252",
        "mojibake-cp1252.md",
        f"# {RUSSIAN}\n\nВекторная база данных.\n".encode().decode("sloppy-windows-1252"),
        ok,
        "Векторная база данных.",
    )
    write(
        "UTF-8 with BOM",
        "bom.md",
        codecs.BOM_UTF8 + "# Notes\n\nÀ bientôt.\n".encode(),
        ok,
        "À bientôt.",
    )

    # Size and shape.
    write(
        "10 MB single line (minified HTML page)",
        "minified.html",
        _minified_page(),
        ok,
        "Tail marker: zebra quartz.",
    )
    write(
        "deeply nested HTML (5,000 divs)",
        "deep.html",
        "<html><body>" + "<div>" * 5000 + "deep" + "</div>" * 5000 + "</body></html>",
        failed,
        "HTML nested too deeply to read",
    )
    write(
        "HTML of only scripts and styles",
        "scripts.html",
        "<html><head><style>body{margin:0}</style><script>var a = 1;</script></head>"
        "<body><script>document.write('hi')</script><noscript></noscript></body></html>",
        failed,
        "no readable text in HTML (only scripts/styles/navigation)",
    )
    write(
        "malformed HTML (unclosed and stray tags)",
        "malformed.html",
        "<html><head><title>Broken</title><body><p>First <b>bold <i>para</p><div>Second <x y=>para"
        "</span></table><p>Third & last < para",
        ok,
        "Second para",
    )
    write(
        "Markdown of front matter only",
        "front-matter.md",
        "---\ntitle: Draft\n---\n",
        failed,
        "no text found (only front matter, headings or markup)",
    )

    # DOCX.
    write(
        ".docx that is not a zip",
        "fake.docx",
        "just some text",
        failed,
        "not a valid .docx (not a zip archive)",
    )
    write(
        "legacy .doc named .docx",
        "old.docx",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512),
        failed,
        "not a valid .docx (legacy binary .doc file",
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hello")
    write(
        ".docx that is a zip of something else",
        "archive.docx",
        buffer.getvalue(),
        failed,
        "not a valid .docx (zip archive without a Word document)",
    )

    # Links and special files.
    add("symlink loop", "loop-a.md", failed, "symlink loop").symlink_to(folder / "loop-b.md")
    (folder / "loop-b.md").symlink_to(folder / "loop-a.md")
    cases.append(Case("symlink loop", folder / "loop-b.md", failed, "symlink loop"))
    add("dangling symlink", "dangling.md", failed, "broken symlink (target missing)").symlink_to(
        folder / "deleted-long-ago.md"
    )
    os.mkfifo(
        add(
            "named pipe (FIFO) named .md",
            "pipe.md",
            failed,
            "not a regular file (device, socket or pipe)",
        )
    )
    (folder / "nested").mkdir()
    (folder / "nested" / "page.md").write_text("# Nested\n\nA page in a subfolder.\n")
    cases.append(
        Case("file in a subfolder", folder / "nested" / "page.md", ok, "A page in a subfolder.")
    )
    add(
        "symlinked folder looping to its parent", "nested/up", Expect.SKIPPED, "symlinked folder"
    ).symlink_to(folder)

    # Names.
    write(
        "name with spaces",
        "release notes 2.6.md",
        "# Notes\n\nSpaces in the name.\n",
        ok,
        "Spaces in the name.",
    )
    write(
        "name with an apostrophe (Milvus Lite cannot update or delete its manifest row)",
        "bob's notes.md",
        "# Notes\n\nAn apostrophe in the name.\n",
        failed,
        "path holds an apostrophe",
    )
    write(
        "name with a newline",
        "two\nlines.md",
        "# Two\n\nA newline in the name.\n",
        failed,
        "path holds a line break or another control character",
    )
    write(
        "name in Cyrillic and CJK",
        "заметки-笔记.md",
        "# Заметки\n\nНе ASCII имя.\n",
        ok,
        "Не ASCII имя.",
    )
    write("name with Rich markup, failing", "[red]draft [v2].md", b"", failed, "empty file")
    write("name with a newline, failing", "bad\nname.md", b"", failed, "path holds a line break")
    bad_name = os.fsdecode(b"caf\xe9-latin1-name.md")  # not UTF-8: a surrogate escape
    write(
        "name that is not valid UTF-8",
        bad_name,
        "# Café\n\nText.\n",
        failed,
        "path is not valid UTF-8",
    )

    # Left out by the walk.
    write("hidden file", ".secret.md", "# Secret\n\nHidden text.\n", Expect.SKIPPED, "hidden")
    git = folder / ".git"
    (git / "objects").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "description.md").write_text("# Repo\n\nNot a document.\n")
    cases.append(Case(".git folder", git, Expect.SKIPPED, "hidden"))
    write("unsupported type (.csv)", "table.csv", "a,b\n1,2\n", Expect.SKIPPED, "unsupported type")

    # Paths given directly.
    given = loose / "given file.md"
    shutil.copyfile(guide / "indexes" / "floating-vector" / "ivf-flat.md", given)
    cases.append(Case("a path that is a file", given, ok, "IVF_FLAT", given=True))
    log = loose / "server.log"
    log.write_text("2024-01-01 started\n")
    cases.append(
        Case(
            "a file of unsupported type given directly",
            log,
            failed,
            "unsupported file type (.log)",
            given=True,
        )
    )
    cases.append(
        Case(
            "a path that does not exist",
            loose / "no-such-folder",
            Expect.PATH_ERROR,
            "no such file or folder",
            given=True,
        )
    )
    cases.append(
        Case(
            "a path under a file",
            given / "inside.md",
            Expect.PATH_ERROR,
            f"no such file or folder ({given} is a file, not a folder)",
            given=True,
        )
    )

    # Unreadable file and folder: only meaningful when not root.
    if os.geteuid() != 0:
        locked = write(
            "file without read permission",
            "locked.md",
            "# Locked\n\nSecret.\n",
            failed,
            "permission denied",
        )
        locked.chmod(0)
        private = add(
            "folder without read permission",
            "private",
            Expect.PATH_ERROR,
            "permission denied (folder cannot be listed)",
        )
        private.mkdir()
        (private / "inside.md").write_text("# Inside\n\nUnreachable.\n")
        private.chmod(stat.S_IWUSR | stat.S_IXUSR)
    return cases


def _png() -> bytes:
    """A real PNG image: the scanned page of the pypdf fixture git.pdf."""
    return PdfReader(PDF_FIXTURES / "git.pdf").pages[0].images[0].data


def _docx(path: Path) -> None:
    """A small real .docx written by python-docx."""
    document = docx.Document()
    document.add_heading("Setup", level=1)
    document.add_paragraph("Run the installer with sudo.")
    document.save(path)


def _minified_page() -> bytes:
    """An HTML page of one line over 10 MB: inline styles, scripts and a base64 image first,
    two paragraphs of prose at the end."""
    rng = random.Random(7)
    css = "".join(f".c{i}{{color:#{i % 4096:03x};margin:{i % 17}px}}" for i in range(120_000))
    js = "".join(f"var v{i}=function(a){{return a*{i}+'{i}';}};" for i in range(80_000))
    image = base64.b64encode(rng.randbytes(2_400_000)).decode()
    page = (
        "<!DOCTYPE html><html><head><title>Minified page</title>"
        f"<style>{css}</style><script>{js}</script></head><body><h1>Minified page</h1>"
        f"<img alt='chart' src='data:image/png;base64,{image}'>"
        "<p>This page keeps its prose after megabytes of styles, scripts and an image.</p>"
        "<p>Tail marker: zebra quartz.</p></body></html>"
    ).encode()
    assert len(page) > 10_000_000 and b"\n" not in page
    return page
