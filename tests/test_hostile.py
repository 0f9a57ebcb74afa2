"""Hostile input: `python -m ingest` on a corpus of bad and awkward files beside good ones.

Every good file is stored; every bad one gets exactly one ``failed PATH: reason`` (or
``error PATH: reason``) line; text in a saveable encoding is stored repaired; the summary
counts every outcome and the exit code is 1. Files deleted or changed while a run is under
way are driven through the `Ingestor` in-process.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hostile_corpus import (
    MILVUS_DOCS_EN,
    Case,
    Expect,
    build_hostile_corpus,
    corpus_folder,
    ingest_paths,
)

from ingest.discover import discover
from ingest.pipeline import Ingestor, Status
from rag.chunking import Chunker
from rag.loaders import load_document
from rag.store import CollectionProfile, MilvusStore

REPO = Path(__file__).resolve().parents[1]
PAGES = MILVUS_DOCS_EN / "userGuide" / "indexes" / "floating-vector"


def shown(path: Path) -> str:
    """A path as ingest prints it: control characters and undecodable bytes escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(path))


def lines_for(stderr: str, label: str, case: Case) -> list[str]:
    """The stderr lines that report ``case`` under ``label`` ("failed" or "error")."""
    prefix = f"{label} {shown(case.path)}: "
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def stored_texts(store: MilvusStore) -> dict[str, str]:
    """Each stored source's chunk texts, in chunk order, joined by blank lines."""
    chunks = defaultdict(list)
    for chunk in store.all_chunks():
        chunks[chunk.source].append(chunk)
    return {
        source: "\n\n".join(c.text for c in sorted(found, key=lambda c: c.chunk_index))
        for source, found in chunks.items()
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_ingest_cli_on_the_hostile_corpus(tmp_path):
    cases = build_hostile_corpus(tmp_path / "hostile")
    assert len({case.kind for case in cases}) >= 25
    by = defaultdict(list)
    for case in cases:
        by[case.expect].append(case)
    db = tmp_path / "hostile.db"
    command = [sys.executable, "-m", "ingest", *map(str, ingest_paths(tmp_path / "hostile", cases))]
    result = subprocess.run(
        [*command, "--db", str(db)], capture_output=True, text=True, cwd=REPO, timeout=900
    )
    assert result.returncode == 1, result.stderr

    # One specific line per failed file and per path that cannot be walked, nothing more.
    for label, expect in (("failed", Expect.FAILED), ("error", Expect.PATH_ERROR)):
        for case in by[expect]:
            lines = lines_for(result.stderr, label, case)
            assert len(lines) == 1, (case.kind, lines, result.stderr)
            assert case.detail in lines[0], (case.kind, lines[0])
        reported = [line for line in result.stderr.splitlines() if line.startswith(f"{label} ")]
        assert len(reported) == len(by[expect]), result.stderr
    for case in by[Expect.INGESTED] + by[Expect.SKIPPED]:
        assert not lines_for(result.stderr, "failed", case), case.kind

    # The summary counts every outcome: files by status, path errors and skips by reason.
    n_ok, n_failed = len(by[Expect.INGESTED]), len(by[Expect.FAILED])
    assert f"files: {n_ok} added, 0 updated, 0 unchanged, {n_failed} failed, 0 pruned" in (
        result.stdout
    )
    skips = Counter(case.detail for case in by[Expect.SKIPPED])
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(skips.items()))
    assert (
        f"paths: {n_ok + n_failed} files found, {len(by[Expect.PATH_ERROR])} errors · "
        f"skipped: {skipped}"
    ) in result.stdout
    assert "1 symlinked folder" in skipped and "2 hidden" in skipped

    # Exactly the good and saveable files are stored, each with its text, under the hash
    # of its bytes; chunks are found by source whatever the name holds.
    store = MilvusStore.open(str(db), "docs", create=False)
    try:
        texts = stored_texts(store)
        manifest = store.files()
        ingested = {str(case.path) for case in by[Expect.INGESTED]}
        assert set(texts) == ingested == set(manifest)
        for case in by[Expect.INGESTED]:
            source = str(case.path)
            assert case.detail in texts[source], (case.kind, texts[source][:500])
            assert manifest[source].file_hash == sha256(case.path)
            assert store.count_chunks(source=source) == manifest[source].n_chunks > 0, case.kind
    finally:
        store.close()
    repaired = "".join(
        texts[str(case.path)] for case in by[Expect.INGESTED] if "mojibake" in case.kind
    )
    assert "–ü" not in repaired and "Ð" not in repaired  # no Mac Roman / cp1252 garbage left

    again = subprocess.run(
        [*command, "--db", str(db)], capture_output=True, text=True, cwd=REPO, timeout=900
    )
    assert again.returncode == 1
    assert f"files: 0 added, 0 updated, {n_ok} unchanged, {n_failed} failed" in again.stdout


@pytest.fixture
def store(tmp_path, embedder):
    store = MilvusStore.open(str(tmp_path / "t.db"), "docs", CollectionProfile.of(embedder))
    yield store
    store.close()


@pytest.fixture
def ingestor(store, embedder, settings) -> Ingestor:
    """An ingestor that embeds and commits each file before it reads the next one."""
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    return Ingestor(store, embedder, chunker, flush_chunks=1)


def test_files_deleted_and_changed_during_the_run(tmp_path, ingestor, store, monkeypatch):
    import ingest.pipeline

    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a-flat.md", "b-deleted.md", "c-changed.md", "d-ivf-sq8.md"):
        source = "flat.md" if name == "a-flat.md" else "ivf-sq8.md"
        (folder / name).write_bytes((PAGES / source).read_bytes())
    deleted, changed = folder / "b-deleted.md", folder / "c-changed.md"
    real_read = ingest.pipeline.read_file

    def read_then_edit(path, **kwargs):  # once the run has read the first file
        read = real_read(path, **kwargs)
        if path == folder / "a-flat.md":
            deleted.unlink()
            changed.write_text("# Changed\n\nRewritten while the run was under way.\n")
        return read

    monkeypatch.setattr(ingest.pipeline, "read_file", read_then_edit)
    report = ingestor.run(discover([folder]).files)
    outcomes = {Path(o.path).name: (o.status, o.reason) for o in report.outcomes}
    assert outcomes == {
        "a-flat.md": (Status.ADDED, None),
        "b-deleted.md": (Status.FAILED, "file not found (vanished?)"),
        "c-changed.md": (Status.ADDED, None),
        "d-ivf-sq8.md": (Status.ADDED, None),
    }
    texts = stored_texts(store)
    assert texts[str(changed)] == "Rewritten while the run was under way."
    assert store.files()[str(changed)].file_hash == sha256(changed)
    assert str(deleted) not in texts and str(deleted) not in store.files()


def test_a_file_replaced_while_it_is_read_is_stored_as_one_version(
    tmp_path, ingestor, store, monkeypatch
):
    """An editor saves (write and rename) right after ingest opened the file: the text
    stored and the hash stored are of the same version, and the next run takes the new one."""
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\nThe old version.\n")
    old_hash = sha256(path)
    real_open = Path.open
    opened = []

    def open_then_save(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        if self == path and not opened:
            opened.append(mode)
            saved = tmp_path / "notes.md.tmp"
            saved.write_text("# Notes\n\nThe new version.\n")
            os.replace(saved, path)  # the open handle still reads the old version
        return handle

    monkeypatch.setattr(Path, "open", open_then_save)
    assert ingestor.run([path]).count(Status.ADDED) == 1
    assert opened  # the file was read through Path.open, so it was replaced mid-read
    monkeypatch.undo()
    assert stored_texts(store)[str(path)] == "The old version."
    assert store.files()[str(path)].file_hash == old_hash != sha256(path)

    assert ingestor.run([path]).count(Status.UPDATED) == 1
    assert stored_texts(store)[str(path)] == "The new version."
    assert store.files()[str(path)].file_hash == sha256(path)


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="running as root: root reads any file and lists any folder, so nothing is "
    "unreadable (the hostile corpus leaves these cases out as root too)",
)
def test_unreadable_file_and_folder(tmp_path, ingestor):
    cases = build_hostile_corpus(tmp_path / "hostile")
    locked = next(c for c in cases if c.kind == "file without read permission")
    private = next(c for c in cases if c.kind == "folder without read permission")
    found = discover([corpus_folder(tmp_path / "hostile")])
    assert (str(private.path), private.detail) in found.errors
    assert locked.path in found.files
    outcome = ingestor.run([locked.path]).outcomes[0]
    assert (outcome.status, outcome.reason) == (Status.FAILED, locked.detail)


def test_a_10_mb_single_line_of_prose_loads_and_chunks_in_linear_time(tmp_path, embedder):
    """The CLI corpus holds a 10 MB one-line HTML page; a 10 MB line of prose is checked here
    without embedding (its ~12,000 chunks take minutes to embed on a CPU)."""
    path = tmp_path / "line.txt"
    path.write_text(("Vectors are stored in segments. " * 320_000)[:10_000_000])
    document = load_document(path)
    pieces = Chunker(embedder.tokenizer, 200, 32).split_text(document.sections[0].text)
    assert len(pieces) > 10_000
    assert pieces[0].startswith("Vectors are stored in segments.")
    assert all(piece.endswith(".") for piece in pieces[:-1])  # cut after sentences


def _python_lines(function, *args) -> int:
    """Lines of the project's own Python (rag/) executed by ``function(*args)``: a count of
    work that does not depend on the machine's speed or load."""
    rag = str(Path(__file__).resolve().parents[1] / "rag")
    lines = 0

    def local(frame, event, arg):
        nonlocal lines
        lines += event == "line"
        return local

    sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename.startswith(rag)
                 else None)  # fmt: skip
    try:
        function(*args)
    finally:
        sys.settrace(None)
    return lines


def test_loading_and_chunking_one_long_line_is_linear_in_its_length(tmp_path, embedder):
    """Four times the text costs about four times the work, not sixteen (the guard against
    chunking that was quadratic in the words of a line)."""
    chunker = Chunker(embedder.tokenizer, 200, 32)
    work = []
    for size in (250_000, 1_000_000):
        path = tmp_path / f"line-{size}.txt"
        path.write_text(("Vectors are stored in segments. " * (size // 32 + 1))[:size])
        work.append(_python_lines(lambda p=path: chunker.split_text(
            load_document(p).sections[0].text)))  # fmt: skip
    assert 3.5 < work[1] / work[0] < 4.5
