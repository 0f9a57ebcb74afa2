"""Ingest: idempotent re-runs, changed and deleted files, bad input, the CLI's exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FLOATING_VECTOR_PAGES, SHARED_DATA

from ingest.discover import discover
from ingest.pipeline import Ingestor, Status
from rag.chunking import Chunker
from rag.loaders import load_document
from rag.store import (
    PROFILE_KEY,
    CollectionProfile,
    MilvusStore,
    ProfileMismatchError,
)

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    FLOATING_VECTOR_PAGES / "flat.md",
    FLOATING_VECTOR_PAGES / "ivf-flat.md",
    FLOATING_VECTOR_PAGES / "ivf-sq8.md",
]


@pytest.fixture
def folder(tmp_path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in PAGES:
        shutil.copy(page, docs / page.name)
    return docs


@pytest.fixture
def store(tmp_path, embedder):
    store = MilvusStore.open(str(tmp_path / "t.db"), "docs", CollectionProfile.of(embedder))
    yield store
    store.close()


def make_ingestor(store, embedder, settings) -> Ingestor:
    chunker = Chunker.from_settings(embedder.tokenizer, settings)
    return Ingestor(store, embedder, chunker)


def run(ingestor, folder):
    return ingestor.run(discover([folder]).files)


def test_real_docs_ingested_and_second_run_writes_nothing(ingested, embedder, settings):
    uri, collection, report = ingested
    assert report.count(Status.ADDED) == 15 and not report.failed
    assert report.chunks_written > 150
    store = MilvusStore.open(uri, collection, CollectionProfile.of(embedder))
    try:
        before = store.all_chunk_ids()
        assert len(before) == report.chunks_written == store.count_chunks()
        docs = {Path(p).name for p in store.files()}
        assert "hnsw.md" in docs and "sparse_vector.md" in docs
        again = make_ingestor(store, embedder, settings).run(sorted(map(Path, store.files())))
        assert again.count(Status.UNCHANGED) == 15
        assert again.chunks_written == 0
        assert store.all_chunk_ids() == before
    finally:
        store.close()


def test_changed_file_replaces_exactly_its_own_chunks(folder, store, embedder, settings):
    ingestor = make_ingestor(store, embedder, settings)
    run(ingestor, folder)
    changed = folder / "ivf-flat.md"
    others = {str(folder / "flat.md"), str(folder / "ivf-sq8.md")}
    before = {s: store.chunk_ids(s) for s in others}
    changed.write_text(changed.read_text() + "\n\n## Tuning notes\n\nUse nprobe 32 for recall.\n")

    report = run(ingestor, folder)
    assert {(Path(o.path).name, o.status) for o in report.outcomes} == {
        ("flat.md", Status.UNCHANGED),
        ("ivf-flat.md", Status.UPDATED),
        ("ivf-sq8.md", Status.UNCHANGED),
    }
    assert {s: store.chunk_ids(s) for s in others} == before
    expected, sections = ingestor.chunker.rows(load_document(changed), "x")
    assert sections  # the section rows are replaced with the chunks
    assert store.chunk_ids(str(changed)) == {c.chunk_id for c in expected + sections}
    # Only the new tail was embedded: earlier chunks kept their content-derived ids.
    assert 0 < report.chunks_written < len(expected)
    assert store.files()[str(changed)].n_chunks == len(expected)


class LookupRecordingStore:
    """A real store that records the files whose stored chunk ids the ingest asks for."""

    def __init__(self, store: MilvusStore) -> None:
        self._store, self.looked_up = store, []

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def chunk_ids(self, source: str) -> set[str]:
        self.looked_up.append(Path(source).name)
        return self._store.chunk_ids(source)


def test_only_files_already_stored_have_their_chunk_ids_looked_up(
    folder, store, embedder, settings
):
    """Milvus Lite answers each lookup by scanning every unflushed row, so asking for each new
    file's chunk ids made a first ingest quadratic; a file without a manifest row has none."""
    recording = LookupRecordingStore(store)
    ingestor = make_ingestor(recording, embedder, settings)
    assert run(ingestor, folder).count(Status.ADDED) == 3
    assert recording.looked_up == []
    changed = folder / "ivf-flat.md"
    changed.write_text(changed.read_text() + "\n\n## Tuning notes\n\nUse nprobe 32 for recall.\n")
    assert run(ingestor, folder).count(Status.UPDATED) == 1
    assert recording.looked_up == ["ivf-flat.md"]


def test_deleted_file_is_pruned_only_when_asked(folder, store, embedder, settings):
    ingestor = make_ingestor(store, embedder, settings)
    run(ingestor, folder)
    gone = folder / "flat.md"
    gone.unlink()
    found = discover([folder])
    run(ingestor, folder)
    assert store.chunk_ids(str(gone))  # kept without --prune
    pruned = ingestor.prune(found.roots, {str(p) for p in found.files})
    assert [(o.path, o.status) for o in pruned] == [(str(gone), Status.PRUNED)]
    assert not store.chunk_ids(str(gone))
    assert str(gone) not in store.files()
    assert store.chunk_ids(str(folder / "ivf-sq8.md"))


def test_a_file_that_turns_bad_keeps_its_stored_version(folder, store, embedder, settings):
    ingestor = make_ingestor(store, embedder, settings)
    run(ingestor, folder)
    victim = folder / "ivf-sq8.md"
    before = store.chunk_ids(str(victim))
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    report = run(ingestor, folder)
    failed = report.failed
    assert [(Path(o.path).name, "binary" in o.reason) for o in failed] == [("ivf-sq8.md", True)]
    assert store.chunk_ids(str(victim)) == before


@pytest.mark.slow
def test_changed_chunking_settings_rechunk_files(folder, store, embedder, settings):
    run(make_ingestor(store, embedder, settings), folder)
    smaller = Ingestor(store, embedder, Chunker(embedder.tokenizer, 100, 10))
    report = run(smaller, folder)
    assert report.count(Status.UPDATED) == 3
    for source, record in store.files().items():
        assert len(store.chunk_ids(source)) == record.n_chunks
        assert record.chunking.endswith("/100/10")


def test_another_profile_is_refused_with_the_way_out(store):
    other = CollectionProfile("bge-m3", "BAAI/bge-m3", "BAAI/bge-m3", 1024, 250002)
    with pytest.raises(ProfileMismatchError, match="--reset") as error:
        MilvusStore.open(store.uri, "docs", other)
    assert "minilm-splade" in str(error.value) and "bge-m3" in str(error.value)


def test_a_collection_of_an_older_schema_is_refused_with_the_way_out(store, embedder):
    record = json.loads(store.read_record(PROFILE_KEY))
    store.write_records({PROFILE_KEY: json.dumps(record | {"schema_version": 1})})
    with pytest.raises(ProfileMismatchError, match="--reset") as error:
        MilvusStore.open(store.uri, "docs", CollectionProfile.of(embedder))
    assert "schema v1 of this tool, which reads schema v2, v3 and v4" in str(error.value)


def test_a_collection_without_its_meta_table_is_refused_with_the_way_out(
    folder, store, embedder, settings
):
    # What an older version of the tool left: chunks, and no `docs__meta` table of records.
    run(make_ingestor(store, embedder, settings), folder)
    chunks = store.count_chunks()
    store.client.drop_collection(store.meta_collection)

    for profile in (CollectionProfile.of(embedder), None):  # ingest side, query side
        with pytest.raises(ProfileMismatchError) as error:
            MilvusStore.open(store.uri, "docs", profile, create=profile is not None)
        message = str(error.value)
        assert "collection 'docs'" in message and "older version of this tool" in message
        assert "re-ingest (python -m ingest PATH --reset, or another --collection)" in message
    assert not store.client.has_collection(store.meta_collection)  # left as it is
    assert store.count_chunks() == chunks


def test_a_path_too_long_to_store_fails_alone(folder, store, embedder, settings):
    deep = folder
    while len(str(deep).encode()) < 2_100:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    shutil.copy(PAGES[0], deep / "flat.md")
    report = run(make_ingestor(store, embedder, settings), folder)
    failed = {o.path: o.reason for o in report.failed}
    assert list(failed) == [str(deep / "flat.md")]
    assert "the collection stores paths of up to 2048 bytes" in failed[str(deep / "flat.md")]
    assert report.count(Status.ADDED) == len(PAGES) and store.sources() == {
        str(folder / page.name) for page in PAGES
    }


def test_the_summary_shows_a_db_inside_the_working_directory_relative_to_it(tmp_path, monkeypatch):
    from ingest.__main__ import shown_uri

    monkeypatch.chdir(tmp_path)
    assert shown_uri(str(tmp_path / "data" / "milvus.db")) == "data/milvus.db"
    assert shown_uri("data/milvus.db") == "data/milvus.db"
    assert shown_uri(str(tmp_path.parent / "other.db")) == str(tmp_path.parent / "other.db")
    assert shown_uri("http://127.0.0.1:19530") == "http://127.0.0.1:19530"


@pytest.mark.slow
def test_cli_reports_bad_files_and_exits_nonzero(tmp_path):
    docs = tmp_path / "mixed"
    docs.mkdir()
    shutil.copy(PAGES[0], docs / "good.md")
    (docs / "empty.md").write_bytes(b"")
    (docs / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    shutil.copy(SHARED_DATA / "formats/pdf/pypdf_fixtures/encrypted-file.pdf", docs / "locked.pdf")
    (docs / "latin1.txt").write_bytes("Café au lait, crème brûlée à la carte.".encode("latin-1"))
    db = tmp_path / "cli.db"
    missing = tmp_path / "missing"
    command = [sys.executable, "-m", "ingest", str(docs), str(missing), "--db", str(db)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 1, result.stderr
    lines = " ".join(result.stderr.split())
    assert f"{docs / 'empty.md'}: empty file" in lines
    assert f"{docs / 'image.md'}: binary" in lines
    assert f"{docs / 'locked.pdf'}: PDF is password-protected" in lines
    assert f"{tmp_path / 'missing'}: no such file or folder" in lines
    assert "files: 2 added, 0 updated, 0 unchanged, 3 failed, 0 pruned" in result.stdout
    assert f"docs @ {db}\n" in result.stdout  # outside the working directory: as given
    assert "files: 5/5 " in result.stderr  # on a pipe, progress is a plain line

    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert "files: 0 added, 0 updated, 2 unchanged, 3 failed" in again.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("RAG_BM25_ANALYZER=whitespace", "unknown BM25 analyzer 'whitespace'"),
        ("RAG_DENSE_INDEX=DISKANN", "unknown dense index 'DISKANN'"),
        ("RAG_CHUNK_SIZE=many", "chunk_size"),
    ],
)
def test_cli_refuses_a_bad_setting_with_its_reason(tmp_path, setting, message):
    key, value = setting.split("=")
    command = [sys.executable, "-m", "ingest", str(PAGES[0]), "--db", str(tmp_path / "x.db")]
    env = os.environ | {key: value}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_prune_removes_chunks_of_an_ingest_that_never_completed(folder, store, embedder, settings):
    ingestor = make_ingestor(store, embedder, settings)
    doomed = folder / "flat.md"
    chunks = ingestor.chunker.chunk(load_document(doomed), "0" * 64)
    # A run killed after writing chunks but before committing the file leaves no manifest row.
    store.upsert_chunks(chunks, embedder.encode_documents([c.text for c in chunks]))
    doomed.unlink()
    found = discover([folder])
    assert str(doomed) not in store.files()
    pruned = ingestor.prune(found.roots, {str(p) for p in found.files})
    assert [o.path for o in pruned] == [str(doomed)]
    assert not store.chunk_ids(str(doomed))
