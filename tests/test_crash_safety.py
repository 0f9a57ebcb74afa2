"""Crash safety of the ingest: a run that dies at any point of a file's switch is finished or
undone by the next run (the switch journal), and random `kill -9`s converge (the script)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import FLOATING_VECTOR_PAGES

from ingest.discover import discover
from ingest.pipeline import Ingestor, Recovery, Status
from rag.chunking import Chunker
from rag.embedders.base import Embeddings
from rag.loaders import load_document
from rag.store import DENSE_FIELD, CollectionProfile, FileRecord, FileSwitch, MilvusStore

REPO = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands for `kill -9`: not an ``Exception``, so the ingest cannot handle it."""


class DyingStore:
    """A real store that dies in its first call of ``method``, after doing ``fraction`` of
    it (the first part of the chunks, ids or switches it was given); every other call goes
    to the store."""

    def __init__(self, store: MilvusStore, method: str, fraction: float) -> None:
        self._store, self._method, self._fraction = store, method, fraction

    def __getattr__(self, name: str):
        real = getattr(self._store, name)
        if name != self._method:
            return real

        def dying(first, *rest):
            if self._fraction < 1:
                first = list(first)
                n = int(len(first) * self._fraction)
                if not 0 < n < len(first):  # pytest.fail: not an Exception the ingest handles
                    pytest.fail(f"{name} of {len(first)} items cannot die halfway")
                first = first[:n]
                rest = tuple(
                    Embeddings(r.dense[:n], r.sparse[:n]) if isinstance(r, Embeddings) else r
                    for r in rest
                )
            real(first, *rest)
            raise Killed(name)

        return dying


class FailingStore:
    """A real store whose ``method`` raises an ordinary error on its second call."""

    def __init__(self, store: MilvusStore, method: str) -> None:
        self._store, self._method, self.calls = store, method, 0

    def __getattr__(self, name: str):
        real = getattr(self._store, name)
        if name != self._method:
            return real

        def failing(*args):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("connection reset")
            return real(*args)

        return failing


@pytest.fixture
def folder(tmp_path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("flat.md", "ivf-flat.md", "ivf-sq8.md"):
        shutil.copy(FLOATING_VECTOR_PAGES / name, docs / name)
    return docs


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "crash.db")


def open_store(db: str, embedder) -> MilvusStore:
    return MilvusStore.open(db, "docs", CollectionProfile.of(embedder))


def ingestor(store, embedder, settings) -> Ingestor:
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    return Ingestor(store, embedder, chunker)


def version_ids(path: Path, embedder, settings) -> set[str]:
    """The chunk ids of the file's current text."""
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    return {c.chunk_id for c in chunker.chunk(load_document(path), "")}


def insert_paragraph(path: Path) -> None:
    """Insert a real paragraph (of hnsw.md) in the middle: chunks after it change ids."""
    paragraphs = path.read_text().split("\n\n")
    extra = next(
        p for p in (FLOATING_VECTOR_PAGES / "hnsw.md").read_text().split("\n\n") if len(p) > 200
    )
    paragraphs.insert(len(paragraphs) // 2, extra)
    path.write_text("\n\n".join(paragraphs))


def searchable_ids(store: MilvusStore, source: str) -> set[str]:
    """Ids of every chunk of ``source`` that a (dense, exact) search returns."""
    dim = store.profile.dim
    hits = store.search(
        DENSE_FIELD, [np.ones(dim, np.float32) / np.sqrt(dim)], 1000, f'source == "{source}"'
    )
    return {hit["id"] for hit in hits}


@pytest.mark.parametrize(
    ("method", "fraction", "expected"),
    [
        ("begin_switches", 1.0, Recovery.UNDONE),  # journaled, nothing written
        ("upsert_chunks", 0.5, Recovery.UNDONE),  # half of the new chunks written
        ("upsert_chunks", 1.0, Recovery.FINISHED),  # new chunks written, stale ones not deleted
        ("delete_chunks", 0.5, Recovery.FINISHED),  # half of the stale chunks deleted
        ("commit_file", 1.0, Recovery.FINISHED),  # committed, journal not cleared
    ],
)
def test_a_switch_killed_at_any_step_is_finished_or_undone_by_the_next_run(
    method, fraction, expected, folder, db, embedder, settings
):
    store = open_store(db, embedder)
    ingestor(store, embedder, settings).run(discover([folder]).files)
    changed = folder / "ivf-sq8.md"
    source = str(changed)
    old_ids, old_record = store.chunk_ids(source), store.files()[source]
    others = {s: store.chunk_ids(s) for s in store.files() if s != source}
    insert_paragraph(changed)
    new_ids = version_ids(changed, embedder, settings)
    assert old_ids - new_ids and new_ids - old_ids

    with pytest.raises(Killed):
        ingestor(DyingStore(store, method, fraction), embedder, settings).run(
            discover([folder]).files
        )
    # What the kill left: the old version's manifest row and an open switch.
    assert store.files()[source] == old_record or method == "commit_file"
    assert set(store.journal()) == {source}
    store.close()

    changed.unlink()  # the file vanishes before the next run: recovery reads the store only
    store = open_store(db, embedder)
    try:
        report = ingestor(store, embedder, settings).run(discover([folder]).files)
        assert report.recovered == {source: expected}
        assert report.count(Status.UNCHANGED) == 2 and not report.chunks_written
        assert store.journal() == {}
        kept = old_ids if expected is Recovery.UNDONE else new_ids
        assert store.chunk_ids(source) == kept
        assert searchable_ids(store, source) == kept
        record = store.files()[source]
        assert record.n_chunks == len(kept)
        assert (record == old_record) is (expected is Recovery.UNDONE)
        assert {s: store.chunk_ids(s) for s in others} == others
    finally:
        store.close()


def test_a_new_file_killed_inside_its_upsert_leaves_nothing(folder, db, embedder, settings):
    store = open_store(db, embedder)
    ingestor(store, embedder, settings).run(discover([folder]).files)
    before = store.all_chunk_ids()
    new = folder / "hnsw.md"
    shutil.copy(FLOATING_VECTOR_PAGES / "hnsw.md", new)
    with pytest.raises(Killed):
        dying = DyingStore(store, "upsert_chunks", 0.5)
        ingestor(dying, embedder, settings).run(discover([folder]).files)
    assert store.chunk_ids(str(new))  # orphan chunks of a file in no manifest row
    new.unlink()
    try:
        report = ingestor(store, embedder, settings).run(discover([folder]).files)
        assert report.recovered == {str(new): Recovery.UNDONE}
        assert store.all_chunk_ids() == before
        assert str(new) not in store.files() and str(new) not in store.sources()
    finally:
        store.close()


def test_a_failed_write_fails_its_files_and_leaves_whole_versions(folder, db, embedder, settings):
    store = open_store(db, embedder)
    try:
        ingestor(store, embedder, settings).run(discover([folder]).files)
        first, second = folder / "ivf-flat.md", folder / "ivf-sq8.md"
        old = {str(first): store.chunk_ids(str(first)), str(second): store.chunk_ids(str(second))}
        insert_paragraph(first)
        insert_paragraph(second)

        failing = FailingStore(store, "upsert_chunks")
        report = ingestor(failing, embedder, settings).run(discover([folder]).files)
        outcomes = {Path(o.path).name: o for o in report.outcomes}
        assert outcomes["ivf-flat.md"].status is Status.UPDATED
        assert outcomes["ivf-sq8.md"].status is Status.FAILED
        assert "storing failed: RuntimeError: connection reset" in outcomes["ivf-sq8.md"].reason
        assert store.journal() == {}
        assert store.chunk_ids(str(first)) == version_ids(first, embedder, settings)
        assert store.chunk_ids(str(second)) == old[str(second)]

        again = ingestor(store, embedder, settings).run(discover([folder]).files)
        assert {(Path(o.path).name, o.status) for o in again.outcomes} == {
            ("flat.md", Status.UNCHANGED),
            ("ivf-flat.md", Status.UNCHANGED),
            ("ivf-sq8.md", Status.UPDATED),
        }
        assert store.chunk_ids(str(second)) == version_ids(second, embedder, settings)
    finally:
        store.close()


def test_the_journal_keeps_large_switches_and_spots_an_unfinished_one(db, embedder):
    store = open_store(db, embedder)
    try:
        assert store.journal() == {}
        record = FileRecord("/docs/big.pdf", "ab" * 32, "tok/200/32", 10, 1, 4_000, 7)
        added = frozenset(f"{i:032x}" for i in range(4_000))
        stale = frozenset(f"{i:032x}" for i in range(5_000, 5_010))
        small = FileSwitch(replace(record, source="/docs/ü small.md"), frozenset(), stale)
        store.begin_switches([FileSwitch(record, added, stale), small])
        assert store.journal() == {
            record.source: FileSwitch(record, added, stale),
            small.record.source: small,
        }
        store.client.delete(store.journal_collection, ids=[f"000001:{record.source}"])
        assert store.journal() == {record.source: None, small.record.source: small}
        store.end_switches([record.source, small.record.source])
        assert store.journal() == {}
    finally:
        store.close()


@pytest.mark.slow
def test_random_kills_of_real_ingests_converge(tmp_path):
    command = [
        sys.executable,
        "scripts/kill_trials.py",
        "--trials",
        "3",
        "--pages",
        "6",
        "--seed",
        "1",
        "--db-dir",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "converged 3/3" in result.stdout
    trials = re.findall(r"^trial .*-> converged$", result.stdout, re.MULTILINE)
    assert len(trials) == 3
    assert sum("not killed" not in line for line in trials) >= 2, result.stdout
