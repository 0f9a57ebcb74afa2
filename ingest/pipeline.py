"""The ingest run: load → chunk → embed → store, per file, idempotent and crash-safe.

A file's version is committed in three steps: (1) upsert its chunks that are not stored yet
(ids derive from content, so a re-run writes the same ids), (2) delete its stored chunks
that the new version no longer has, (3) write its manifest row (path, sha256, chunk count).
A file whose manifest hash equals its current hash is complete and skipped. A run killed
between any two steps leaves a file whose manifest hash is stale or missing, so the next run
redoes the three steps and converges to exactly the new version's chunks.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from rag.chunking import Chunker, embedding_text
from rag.embedders.base import Embedder
from rag.loaders import LoadError, load_document
from rag.store import FileRecord, MilvusStore
from rag.types import Chunk


class Status(StrEnum):
    """What happened to one file."""

    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    PRUNED = "pruned"


@dataclass(frozen=True)
class FileOutcome:
    """The result for one file: its status, chunks written, and why it failed."""

    path: str
    status: Status
    chunks_written: int = 0
    reason: str | None = None


@dataclass
class IngestReport:
    """Every file's outcome and the run's totals."""

    outcomes: list[FileOutcome] = field(default_factory=list)
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
        """One line: files per status, chunks written, seconds, chunks per second."""
        counts = Counter(o.status for o in self.outcomes)
        files = ", ".join(f"{counts[s]} {s.value}" for s in Status)
        rate = self.chunks_written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"files: {files} · chunks written: {self.chunks_written} · "
            f"{self.seconds:.1f} s · {rate:.1f} chunks/s"
        )


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes (streamed)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass
class _Pending:
    """A file whose new chunks wait for the next embedding batch."""

    record: FileRecord
    status: Status
    new_chunks: list[Chunk]
    stale_ids: set[str]


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
        chunks written after each embedding batch (for progress bars). A file that fails
        to load keeps whatever version of it was stored before.
        """
        started = time.perf_counter()
        report = IngestReport()
        manifest = self.store.files()
        pending: list[_Pending] = []

        def finish(outcome: FileOutcome) -> None:
            report.outcomes.append(outcome)
            if on_file:
                on_file(outcome)

        for path in files:
            outcome, item = self._prepare(path, manifest.get(str(path)))
            if outcome is not None:
                finish(outcome)
                continue
            pending.append(item)
            if sum(len(p.new_chunks) for p in pending) >= self.flush_chunks:
                for done in self._flush(pending, on_chunks):
                    finish(done)
                pending = []
        for done in self._flush(pending, on_chunks):
            finish(done)
        report.seconds = time.perf_counter() - started
        return report

    def _prepare(
        self, path: Path, stored: FileRecord | None
    ) -> tuple[FileOutcome | None, _Pending | None]:
        """Hash, load and chunk one file; an outcome if it needs no embedding."""
        source = str(path)
        try:
            stat = path.stat()
            if stat.st_size > self.max_bytes:
                # load_document would refuse it too; checked first to avoid hashing it.
                load_document(path, max_bytes=self.max_bytes)
            file_hash = file_sha256(path)
            chunking = self.chunker.signature
            if stored is not None and (stored.file_hash, stored.chunking) == (file_hash, chunking):
                return FileOutcome(source, Status.UNCHANGED), None
            document = load_document(path, max_bytes=self.max_bytes)
        except LoadError as error:
            return FileOutcome(source, Status.FAILED, reason=error.reason), None
        except OSError as error:
            return FileOutcome(source, Status.FAILED, reason=_os_reason(error)), None
        chunks = self.chunker.chunk(document, file_hash)
        if not chunks:
            return FileOutcome(source, Status.FAILED, reason="no text to index"), None
        stored_ids = self.store.chunk_ids(source)
        new_ids = {c.chunk_id for c in chunks}
        record = FileRecord(
            source,
            file_hash,
            chunking,
            stat.st_size,
            stat.st_mtime_ns,
            len(chunks),
            int(time.time()),
        )
        status = Status.ADDED if stored is None else Status.UPDATED
        new_chunks = [c for c in chunks if c.chunk_id not in stored_ids]
        return None, _Pending(record, status, new_chunks, stored_ids - new_ids)

    def _flush(
        self, pending: list[_Pending], on_chunks: Callable[[int], None] | None
    ) -> list[FileOutcome]:
        """Embed and write the pending files' new chunks, then commit each file.

        If embedding or writing fails, every pending file fails with the reason; whatever
        was stored before for those files stays (nothing was deleted yet).
        """
        chunks = [c for p in pending for c in p.new_chunks]
        if chunks:
            try:
                embeddings = self.embedder.encode_documents([embedding_text(c) for c in chunks])
                self.store.upsert_chunks(chunks, embeddings)
            except Exception as error:  # noqa: BLE001 - reported per file, the run goes on
                reason = f"embedding or storing failed: {type(error).__name__}: {error}"
                return [FileOutcome(p.record.source, Status.FAILED, reason=reason) for p in pending]
            if on_chunks:
                on_chunks(len(chunks))
        outcomes = []
        for item in pending:
            self.store.delete_chunks(item.stale_ids)
            self.store.commit_file(item.record)
            outcomes.append(FileOutcome(item.record.source, item.status, len(item.new_chunks)))
        return outcomes

    def prune(self, roots: list[Path], keep: set[str]) -> list[FileOutcome]:
        """Delete the chunks of stored files under ``roots`` that are not in ``keep``
        and no longer exist on disk, including chunks of files whose ingest never
        completed (in no manifest row)."""
        prefixes = [str(root).rstrip(os.sep) + os.sep for root in roots]
        outcomes = []
        for source in sorted(set(self.store.files()) | self.store.sources()):
            inside = any(source.startswith(prefix) for prefix in prefixes)
            if inside and source not in keep and not os.path.lexists(source):
                self.store.forget_file(source)
                outcomes.append(FileOutcome(source, Status.PRUNED))
        return outcomes


def _os_reason(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "file not found (deleted during the run?)"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    return error.strerror or str(error)
