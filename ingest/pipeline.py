"""The ingest run: load → chunk → embed → store, per file, idempotent and crash-safe.

A changed file switches to its new version in one logical step, journaled so that a run
killed at any moment can be completed or reverted by the next one:

1. The new chunks of a batch of files are embedded (nothing is written yet).
2. Every file's switch is journaled in ``<collection>__journal``: its new manifest row, the
   ids of its new chunks that are not stored (*added*) and the ids of its stored chunks that
   the new version lacks (*stale*). Chunk ids derive from source, position and text, so
   unchanged chunks keep their ids and are neither written nor deleted.
3. Per file: upsert the added chunks, delete the stale ones, write the manifest row. The
   switch is committed once its last added chunk is stored.
4. The batch's journal rows are deleted.

Steps 2–4 of one batch run on a writer thread while the next batch is read, chunked and
embedded (one batch in flight: batches are written in order).

Recovery: every run (:meth:`Ingestor.run`, :meth:`Ingestor.prune`) first replays the journal
(:meth:`Ingestor.recover`). A switch whose added chunks are all stored is finished (stale
chunks deleted, manifest row written); any other switch has deleted nothing yet and is undone
(the added chunks it wrote are deleted: the file keeps its committed version, or has no chunks
if it was new). The decision reads the store only; a file that has changed or vanished since
is then ingested, or removed by ``--prune``, as usual. Milvus Lite appends each write to the
collection's write-ahead log before the call returns, so a ``kill -9`` of the process loses no
acknowledged write (a power loss can: the log is not fsynced per write). After the replay,
every file holds exactly the chunks of the version its manifest row names (none without a row).
A file whose manifest hash and chunking equal its current ones is complete and skipped.

What a concurrent reader (a search on a served db) can see: Milvus has no transaction over
several rows or collections, so a switch is not isolated. While a file switches, a search can
return chunks of its old and new versions together: always every chunk of one of them, never a
chunk of a third. The window is one file's upsert and delete (not a batch's); after a crash it
lasts until the next run's replay. The manifest names the old version until the switch commits.
The journal assumes one ingest per collection at a time (a second one would replay the first
one's open switches): Milvus Lite allows one process per db; on a server, run one ingest per
collection at a time.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from rag.chunking import Chunker, embedding_text
from rag.embedders.base import Embedder, Embeddings
from rag.language import detect
from rag.loaders import LoadError, parse_document, read_file
from rag.store import MAX_SOURCE_BYTES, FileRecord, FileSwitch, MilvusStore
from rag.types import Chunk, Document


class Status(StrEnum):
    """What happened to one file."""

    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    PRUNED = "pruned"


class Recovery(StrEnum):
    """What the journal replay did to a switch a previous run left unfinished."""

    FINISHED = "finished"
    UNDONE = "undone"


@dataclass(frozen=True)
class FileOutcome:
    """The result for one file: its status, chunks written, and why it failed."""

    path: str
    status: Status
    chunks_written: int = 0
    reason: str | None = None


@dataclass
class IngestReport:
    """Every file's outcome, the switches recovered from an earlier run, and the totals."""

    outcomes: list[FileOutcome] = field(default_factory=list)
    recovered: dict[str, Recovery] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        """Number of files with ``status``."""
        return sum(1 for o in self.outcomes if o.status is status)

    @property
    def chunks_written(self) -> int:
        """Chunks embedded and written in this run."""
        return sum(o.chunks_written for o in self.outcomes)

    @property
    def failed(self) -> list[FileOutcome]:
        """The files that failed, in order."""
        return [o for o in self.outcomes if o.status is Status.FAILED]

    def summary(self) -> str:
        """One line: files per status, interrupted switches recovered (if any), chunks
        written, seconds, chunks per second."""
        counts = Counter(o.status for o in self.outcomes)
        files = ", ".join(f"{counts[s]} {s.value}" for s in Status)
        recovered = Counter(self.recovered.values())
        interrupted = (
            f" · interrupted by an earlier run: {recovered[Recovery.FINISHED]} finished, "
            f"{recovered[Recovery.UNDONE]} undone"
            if recovered
            else ""
        )
        rate = self.chunks_written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"files: {files}{interrupted} · chunks written: {self.chunks_written} · "
            f"{self.seconds:.1f} s · {rate:.1f} chunks/s"
        )


@dataclass
class _Pending:
    """A file whose new chunks wait for the next embedding batch."""

    record: FileRecord
    status: Status
    new_chunks: list[Chunk]
    stale_ids: set[str]

    @property
    def chunks_added(self) -> int:
        """New chunks (section rows not counted), for reports and progress bars."""
        return sum(not c.is_section for c in self.new_chunks)


class Ingestor:
    """Runs ingestion of files into a store.

    Args:
        store: the open chunk collection.
        embedder: the embedder whose profile the store records.
        chunker: splits loaded documents.
        max_bytes: files above this size fail with a clear reason.
        flush_chunks: new chunks gathered across files before one embedding pass (larger
            batches keep the model busy; files commit after their chunks are written).
    """

    def __init__(
        self,
        store: MilvusStore,
        embedder: Embedder,
        chunker: Chunker,
        *,
        max_bytes: int = 50_000_000,
        flush_chunks: int = 256,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.max_bytes = max_bytes
        self.flush_chunks = flush_chunks

    def run(
        self,
        files: list[Path],
        *,
        on_file: Callable[[FileOutcome], None] | None = None,
        on_chunks: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Ingest ``files`` (absolute paths); returns every file's outcome.

        ``on_file`` is called once per finished file and ``on_chunks`` with the number of
        chunks written after each file's upsert (for progress bars; ``on_chunks`` runs on
        the writer thread). A file that fails to load keeps whatever version of it was
        stored before. The run first replays the switch journal (:meth:`recover`) and ends
        with a flush of the chunk and manifest collections.

        Raises:
            Exception: whatever the store raises outside a file's writes (replaying the
                journal, reading the manifest, flushing): the store is unusable; the journal
                stays for the next run.
        """
        started = time.perf_counter()
        report = IngestReport(recovered=self.recover())
        manifest = self.store.files()
        prepared = (self._prepare(path, manifest.get(str(path))) for path in files)
        self._pipeline(prepared, report, on_file, on_chunks)
        report.seconds = time.perf_counter() - started
        return report

    def run_documents(
        self,
        documents: Iterable[Document],
        *,
        on_file: Callable[[FileOutcome], None] | None = None,
    ) -> IngestReport:
        """Ingest documents already in memory (a benchmark corpus: ``rag.eval``,
        ``rag.bench``) through the same chunk → embed → journaled switch → store path as
        :meth:`run`. A document's version is :func:`document_hash`; its source is
        ``Document.source``; its size the UTF-8 bytes of its sections; its mtime 0."""
        started = time.perf_counter()
        report = IngestReport(recovered=self.recover())
        manifest = self.store.files()
        prepared = (self._prepare_document(d, manifest.get(d.source)) for d in documents)
        self._pipeline(prepared, report, on_file, None)
        report.seconds = time.perf_counter() - started
        return report

    def _pipeline(
        self,
        prepared: Iterable[tuple[FileOutcome | None, _Pending | None]],
        report: IngestReport,
        on_file: Callable[[FileOutcome], None] | None,
        on_chunks: Callable[[int], None] | None,
    ) -> None:
        """Gather prepared files into batches of about ``flush_chunks`` new chunks, embed
        each batch, and write it on a writer thread while the next batch is prepared and
        embedded (one batch in flight, so files commit in order). Ends with a flush."""

        def finish(outcomes: Iterable[FileOutcome]) -> None:
            for outcome in outcomes:
                report.outcomes.append(outcome)
                if on_file:
                    on_file(outcome)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer") as writer:
            in_flight: Future | None = None

            def hand_over(batch: list[_Pending]) -> None:
                nonlocal in_flight
                embeddings, failed = self._embed(batch)
                if in_flight is not None:
                    finish(in_flight.result())
                    in_flight = None
                if failed:
                    finish(failed)
                else:
                    in_flight = writer.submit(self._write, batch, embeddings, on_chunks)

            batch: list[_Pending] = []
            for outcome, item in prepared:
                if outcome is not None:
                    finish([outcome])
                    continue
                batch.append(item)
                if sum(len(p.new_chunks) for p in batch) >= self.flush_chunks:
                    hand_over(batch)
                    batch = []
            if batch:
                hand_over(batch)
            if in_flight is not None:
                finish(in_flight.result())
        self.store.flush()

    def recover(self) -> dict[str, Recovery]:
        """Replay the switch journal: finish or undo every switch that an earlier run (killed,
        or whose write failed) left open; see the module docstring.

        Returns:
            The recovered files' sources, each with what was done.

        Raises:
            Exception: whatever the store raises; the journal stays for the next run.
        """
        journal = self.store.journal()
        recovered = {}
        for source, switch in journal.items():
            if switch is None:  # stopped while journaling: none of its chunks was written
                recovered[source] = Recovery.UNDONE
            elif len(self.store.existing_chunk_ids(switch.added)) == len(switch.added):
                self.store.delete_chunks(switch.stale)
                self.store.commit_file(switch.record)
                recovered[source] = Recovery.FINISHED
            else:
                self.store.delete_chunks(switch.added)
                recovered[source] = Recovery.UNDONE
        self.store.end_switches(journal)
        return recovered

    def _prepare(
        self, path: Path, stored: FileRecord | None
    ) -> tuple[FileOutcome | None, _Pending | None]:
        """Read, hash, load and chunk one file; an outcome if it needs no embedding.

        The file is read once and the bytes that are hashed are the bytes that are parsed,
        so the stored hash always matches the stored text: a file changed during the run is
        stored as the version that was read, and the next run sees the change.
        """
        source = str(path)
        if refused := self._refused(source):
            return refused, None
        try:
            read = read_file(path, max_bytes=self.max_bytes)
            file_hash = hashlib.sha256(read.data).hexdigest()
            if self._unchanged(stored, file_hash):
                return FileOutcome(source, Status.UNCHANGED), None
            document = parse_document(path, read.data)
        except LoadError as error:
            return FileOutcome(source, Status.FAILED, reason=error.reason), None
        return self._pending(document, file_hash, len(read.data), read.mtime_ns, stored)

    def _prepare_document(
        self, document: Document, stored: FileRecord | None
    ) -> tuple[FileOutcome | None, _Pending | None]:
        """:meth:`_prepare` for a document already in memory."""
        if refused := self._refused(document.source):
            return refused, None
        version = document_hash(document)
        if self._unchanged(stored, version):
            return FileOutcome(document.source, Status.UNCHANGED), None
        size = sum(len(s.text.encode()) for s in document.sections)
        return self._pending(document, version, size, 0, stored)

    def _refused(self, source: str) -> FileOutcome | None:
        """A failed outcome, with the reason, for a source that cannot be stored and found
        again: not UTF-8, holding a control character, too long, or, in a Milvus Lite db,
        holding an apostrophe."""
        reason = None
        if not _utf8(source):
            reason = _NOT_UTF8_PATH
        elif any(ord(char) < 32 or ord(char) == 127 for char in source):
            reason = _CONTROL_PATH
        elif (size := len(source.encode())) > MAX_SOURCE_BYTES:
            reason = (
                f"path is {size} bytes long; the collection stores paths of up to "
                f"{MAX_SOURCE_BYTES} bytes (move or rename it)"
            )
        elif "'" in source and self.store.lite:
            reason = _APOSTROPHE_PATH
        return FileOutcome(source, Status.FAILED, reason=reason) if reason else None

    def _unchanged(self, stored: FileRecord | None, version: str) -> bool:
        """Whether the stored record is of this version, chunked the way this run chunks."""
        return stored is not None and (stored.file_hash, stored.chunking) == (
            version,
            self.chunker.signature,
        )

    def _pending(
        self, document: Document, version: str, size: int, mtime_ns: int, stored: FileRecord | None
    ) -> tuple[FileOutcome | None, _Pending | None]:
        """Chunk a loaded document and find which of its rows (chunks and section rows,
        ``Chunker.rows``) are new, each with its detected language, and which stored rows its
        new version lacks."""
        source = document.source
        chunks, sections = self.chunker.rows(document, version)
        if not chunks:
            return FileOutcome(source, Status.FAILED, reason="no text to index"), None
        # After the journal's replay a file without a manifest row has no chunks (module
        # docstring), so only a stored file's chunks are looked up: in Milvus Lite each such
        # query scans every unflushed row, which made a first ingest quadratic.
        stored_ids = self.store.chunk_ids(source) if stored is not None else set()
        rows = chunks + sections
        new_ids = {c.chunk_id for c in rows}
        record = FileRecord(
            source,
            version,
            self.chunker.signature,
            size,
            mtime_ns,
            len(chunks),
            int(time.time()),
        )
        status = Status.ADDED if stored is None else Status.UPDATED
        new_chunks = [
            replace(c, language=detect(c.text).code) for c in rows if c.chunk_id not in stored_ids
        ]
        return None, _Pending(record, status, new_chunks, stored_ids - new_ids)

    def _embed(self, batch: list[_Pending]) -> tuple[Embeddings | None, list[FileOutcome]]:
        """Embed the batch's new rows in one pass (a text that repeats, such as a
        one-chunk section's row and its chunk, once): the embeddings (``None`` when no row
        is new), or, if embedding fails, every file of the batch failed with the reason."""
        chunks = [c for p in batch for c in p.new_chunks]
        try:
            texts = [embedding_text(c) for c in chunks]
            return (_encode_distinct(self.embedder, texts) if chunks else None), []
        except Exception as error:  # noqa: BLE001 - reported per file, the run goes on
            reason = f"embedding failed: {type(error).__name__}: {error}"
            return None, [FileOutcome(p.record.source, Status.FAILED, reason=reason) for p in batch]

    def _write(
        self,
        batch: list[_Pending],
        embeddings: Embeddings | None,
        on_chunks: Callable[[int], None] | None,
    ) -> list[FileOutcome]:
        """Switch each file of the batch to its new version (journal, upsert, delete stale,
        commit; see the module docstring).

        If a write fails, the files not committed yet fail with the reason, and the journal is
        replayed at once (:meth:`recover`), so every file holds one whole version.
        """
        switches = [
            FileSwitch(
                p.record, frozenset(c.chunk_id for c in p.new_chunks), frozenset(p.stale_ids)
            )
            for p in batch
        ]
        outcomes: list[FileOutcome] = []
        try:
            self.store.begin_switches(switches)
            row = 0
            for item in batch:
                if item.new_chunks:  # then `embeddings` holds its rows, in order
                    rows = slice(row, row + len(item.new_chunks))
                    row = rows.stop
                    self.store.upsert_chunks(
                        item.new_chunks, Embeddings(embeddings.dense[rows], embeddings.sparse[rows])
                    )
                    if on_chunks:
                        on_chunks(item.chunks_added)
                self.store.delete_chunks(item.stale_ids)
                self.store.commit_file(item.record)
                outcomes.append(FileOutcome(item.record.source, item.status, item.chunks_added))
            self.store.end_switches(p.record.source for p in batch)
        except Exception as error:  # noqa: BLE001 - reported per file, the run goes on
            reason = f"storing failed: {type(error).__name__}: {error}"
            self.recover()
            outcomes += [
                FileOutcome(p.record.source, Status.FAILED, reason=reason)
                for p in batch[len(outcomes) :]
            ]
        return outcomes

    def prune(self, roots: list[Path], keep: set[str]) -> list[FileOutcome]:
        """Delete the chunks of stored files under ``roots`` that are not in ``keep``
        and no longer exist on disk, including chunks of files whose ingest never
        completed (in no manifest row). Replays the switch journal first (:meth:`recover`)
        and flushes when anything was pruned."""
        self.recover()
        prefixes = [str(root).rstrip(os.sep) + os.sep for root in roots]
        outcomes = []
        for source in sorted(set(self.store.files()) | self.store.sources()):
            inside = any(source.startswith(prefix) for prefix in prefixes)
            if inside and source not in keep and not os.path.lexists(source):
                self.store.forget_file(source)
                outcomes.append(FileOutcome(source, Status.PRUNED))
        if outcomes:
            self.store.flush()
        return outcomes


def _encode_distinct(embedder: Embedder, texts: list[str]) -> Embeddings:
    """``embedder.encode_documents(texts)``, each distinct text encoded once."""
    distinct = list(dict.fromkeys(texts))
    if len(distinct) == len(texts):
        return embedder.encode_documents(texts)
    vectors = embedder.encode_documents(distinct)
    at = {text: i for i, text in enumerate(distinct)}
    rows = [at[text] for text in texts]
    return Embeddings(vectors.dense[rows], vectors.sparse[rows])


def document_hash(document: Document) -> str:
    """sha256 hex of a document's title and section texts: the version of a document
    ingested from memory (:meth:`Ingestor.run_documents`)."""
    body = "\0".join([document.title, *(s.text for s in document.sections)])
    return hashlib.sha256(body.encode()).hexdigest()


_NOT_UTF8_PATH = "path is not valid UTF-8 (it cannot be stored; rename it)"
# Milvus Lite 2.5's filter expressions cannot hold a line break, and match no other control
# character as escaped: such a file could be stored but never found again to update or prune.
_CONTROL_PATH = (
    "path holds a line break or another control character (it cannot be stored; rename it)"
)


# Milvus Lite 2.5's engine writes a key into its SQL unescaped: a manifest or journal row
# keyed by a path with an apostrophe is never updated or deleted (upsert and delete fail).
_APOSTROPHE_PATH = (
    "path holds an apostrophe ('), which a Milvus Lite db cannot update or delete by "
    "(rename it, or use a Milvus server)"
)


def _utf8(source: str) -> bool:
    """Whether a path can be stored: its undecodable bytes (surrogate escapes) cannot."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
