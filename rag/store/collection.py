"""``MilvusStore``: a chunk collection with its side tables; chunk writes, reads and search.

One URI works for both deployments: a local path (a Milvus Lite db, ``*.db``) or a server
URL (``http://127.0.0.1:19530``: ``python -m rag serve-db`` or Milvus). The side tables are
kept by their own modules: ``records`` (``__meta``, ``__sparse_params``), ``manifest``
(``__files``) and ``journal`` (``__journal``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict

import numpy as np
from pymilvus import AnnSearchRequest, MilvusClient
from scipy import sparse

from rag.embedders.base import Embeddings
from rag.store import journal, lite, manifest, records
from rag.store.chunks import chunk_rows, row_chunk, sparse_to_milvus
from rag.store.connection import connect, disconnect
from rag.store.errors import ProfileMismatchError, StoreError
from rag.store.journal import JOURNAL_SUFFIX, FileSwitch
from rag.store.manifest import FILES_SUFFIX, FileRecord
from rag.store.profile import PROFILE_KEY, CollectionProfile, check_profile, recorded_profile
from rag.store.records import META_SUFFIX, PARAMS_SUFFIX
from rag.store.schema import (
    BATCH_ROWS,
    BM25_FIELD,
    CHUNK_FIELDS,
    CHUNK_FILTER,
    DENSE_FIELD,
    DENSE_INDEXES,
    LANGUAGE_FIELD,
    LEXICAL_ANALYZERS,
    LEXICAL_FIELD,
    SPARSE_FIELD,
    STRONG,
    create_chunk_collection,
    quote,
)
from rag.types import Chunk


class MilvusStore:
    """The chunk collection, the records about it (``<collection>__meta``), its fitted
    sparse parameters (``<collection>__sparse_params``, created on first use), its file
    manifest (``<collection>__files``) and the journal of unfinished file switches
    (``<collection>__journal``, created on first use).

    Use :meth:`open`; the constructor only stores its arguments. After it, ``profile`` is the
    recorded :class:`CollectionProfile` and ``languages`` whether the chunks record their
    language (schema v3 or later; a v2 collection does not, and is written and searched
    without).

    Args:
        client: a connected ``MilvusClient``.
        collection: the chunk collection's name.
        dense_index: the index of a collection this object creates: ``FLAT`` (exact),
            ``HNSW`` or ``IVF_FLAT`` (parameters in ``DENSE_INDEXES``). Searches use the
            parameters of the index the collection has.
        uri: where the client is connected (for messages).
        analyzer: the tokenizer of Milvus's BM25 in a collection this object creates
            (``LEXICAL_ANALYZERS``: ``standard`` or ``jieba``); an existing collection keeps
            its own, which also analyzes the queries.

    Raises:
        ValueError: an unknown ``dense_index`` or ``analyzer``.
    """

    def __init__(
        self,
        client: MilvusClient,
        collection: str,
        dense_index: str = "FLAT",
        uri: str = "",
        analyzer: str = "standard",
    ) -> None:
        self.client = client
        self.uri = uri
        self.collection = collection
        self.meta_collection = f"{collection}{META_SUFFIX}"
        self.files_collection = f"{collection}{FILES_SUFFIX}"
        self.params_collection = f"{collection}{PARAMS_SUFFIX}"
        self.journal_collection = f"{collection}{JOURNAL_SUFFIX}"
        self.dense_index = dense_index.upper()
        if self.dense_index not in DENSE_INDEXES:
            raise ValueError(
                f"unknown dense index {dense_index!r}: use one of {', '.join(DENSE_INDEXES)}"
            )
        if analyzer not in LEXICAL_ANALYZERS:
            raise ValueError(
                f"unknown BM25 analyzer {analyzer!r}: use one of {', '.join(LEXICAL_ANALYZERS)}"
            )
        self.analyzer = analyzer
        self.dense_search_params: dict = {"metric_type": "IP"}  # set from the index at open
        self.profile: CollectionProfile | None = None
        self.languages = False  # whether chunks record their language (schema v3 on), set at open
        self.chunks_changed = 0  # chunks (not section rows) written or deleted through this

    @property
    def lite(self) -> bool:
        """Whether the collection lives in a Milvus Lite db (a path, not a server URL)."""
        return lite.lite_path(self.uri) is not None

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def open(
        cls,
        uri: str,
        collection: str,
        profile: CollectionProfile | None = None,
        *,
        token: str | None = None,
        dense_index: str = "FLAT",
        analyzer: str = "standard",
        create: bool = True,
    ) -> MilvusStore:
        """Connect, create the collection if needed, check its profile, load it and warm up.

        Args:
            uri: Lite db path or server URL.
            collection: collection name.
            profile: the embedder's profile; ``None`` opens whatever profile is recorded.
            create: create a missing collection (needs ``profile``).

        Raises:
            StoreLockedError, StoreError: see :func:`connect`; or the collection is missing
                and ``create`` is false; or Milvus Lite 2.5 could not set up its mmap folder
                (``rag.store.lite.retry_engine_init``).
            ProfileMismatchError: the collection was built by another profile or schema, or
                by an older version of this tool (it has no ``<collection>__meta``).
        """
        store = cls(connect(uri, token), collection, dense_index, uri, analyzer)
        try:
            if store.lite:
                lite.retry_engine_init(lambda: store._open_tables(profile, create), uri)
            else:
                store._open_tables(profile, create)
        except lite.LiteError as error:
            store.close()
            raise StoreError(str(error)) from None
        except StoreError:
            store.close()
            raise
        return store

    def _open_tables(self, profile: CollectionProfile | None, create: bool) -> None:
        """Create what is missing, check the profile, load and warm up (safe to repeat)."""
        if not self.client.has_collection(self.collection):
            if not create or profile is None:
                raise StoreError(
                    f"no collection {self.collection!r} at {self.uri}: ingest documents first "
                    "(python -m ingest PATH)"
                )
            self._create(profile)
        if not self.client.has_collection(self.meta_collection):
            raise ProfileMismatchError(
                f"collection {self.collection!r} at {self.uri} was made by an older version of "
                f"this tool, or not by this tool (it has no {self.meta_collection} table): "
                "re-ingest (python -m ingest PATH --reset, or another --collection)"
            )
        self.client.load_collection(self.meta_collection)
        if not self.client.has_collection(self.files_collection):
            # new, or a run was killed between the creations
            manifest.create_manifest(self.client, self.collection)
        self.profile = recorded_profile(self.read_record(PROFILE_KEY), self.collection, self.uri)
        fields = self.client.describe_collection(self.collection)["fields"]
        self.languages = any(field["name"] == LANGUAGE_FIELD for field in fields)
        if profile is not None:
            self.check_profile(profile)
        self._load_and_warm_up()

    def close(self) -> None:
        """Release the connection (and the Lite db's lock, with its last client)."""
        disconnect(self.client, self.uri)

    def drop(self) -> None:
        """Delete the chunk collection, its records, manifest, switch journal and fitted
        sparse parameters."""
        for name in (
            self.collection,
            self.meta_collection,
            self.files_collection,
            self.params_collection,
            self.journal_collection,
        ):
            if self.client.has_collection(name):
                self.client.drop_collection(name)

    def _create(self, profile: CollectionProfile) -> None:
        if self.dense_index == "HNSW" and lite.lite_path(self.uri) and lite.engine().native:
            raise StoreError(
                f"{lite.engine().name} has no HNSW index (it builds FLAT and IVF_FLAT): use "
                "RAG_DENSE_INDEX=FLAT or IVF_FLAT for a Milvus Lite db, or a Milvus server "
                "(RAG_MILVUS_URI=http://HOST:19530) for HNSW"
            )
        # The profile first: a run killed before the chunk collection exists leaves records
        # of a missing collection, which the next run overwrites when it creates it.
        if not self.client.has_collection(self.meta_collection):
            records.create_meta(self.client, self.collection)
        self.write_records({PROFILE_KEY: json.dumps(asdict(profile))})
        create_chunk_collection(
            self.client, self.collection, profile.dim, self.dense_index, self.analyzer
        )

    def built_dense_index(self) -> str:
        """The index the engine built on the dense field: ``FLAT``, ``IVF_FLAT`` or ``HNSW``
        (whatever this object was asked to create)."""
        return self.client.describe_index(self.collection, DENSE_FIELD).get("index_type", "")

    def _load_and_warm_up(self) -> None:
        for name in (self.collection, self.files_collection):
            self.client.load_collection(name)
        _, search = DENSE_INDEXES.get(self.built_dense_index(), ({}, {}))
        self.dense_search_params = {"metric_type": "IP", "params": search}
        assert self.profile is not None
        self.client.search(
            self.collection,
            data=[np.ones(self.profile.dim, np.float32) / np.sqrt(self.profile.dim)],
            anns_field=DENSE_FIELD,
            limit=1,
            output_fields=["id"],
        )

    # ----------------------------------------------------------------- profile and records
    def check_profile(self, wanted: CollectionProfile) -> None:
        """Refuse an embedder whose vectors cannot be mixed with the stored ones (see
        ``rag.store.profile.check_profile``).

        Raises:
            ProfileMismatchError: another composition, model, dimension or schema, or other
                fitted sparse parameters.
        """
        assert self.profile is not None
        check_profile(self.profile, wanted, self.collection, self.uri)

    def records(self) -> dict[str, str]:
        """The records about the chunk collection, by key (read from Milvus each time)."""
        return records.read_records(self.client, self.collection)

    def read_record(self, key: str) -> str | None:
        """One record about the chunk collection (``None`` when unset or empty)."""
        return self.records().get(key) or None

    def write_records(self, values: dict[str, str]) -> None:
        """Set records about the chunk collection (in one upsert request).

        Raises:
            ValueError: a key over 64 bytes or a value over 65,535 bytes of UTF-8.
        """
        records.write_records(self.client, self.collection, values)

    def write_params(self, fingerprint: str, text: str) -> None:
        """Store fitted sparse parameters (ASCII text, e.g. BM25's JSON) under their
        fingerprint in ``<collection>__sparse_params``, beside the chunks.

        Raises:
            ValueError: ``text`` is not ASCII.
        """
        records.write_params(self.client, self.collection, fingerprint, text)

    def read_params(self, fingerprint: str) -> str | None:
        """The parameters stored under ``fingerprint`` (``None`` when there are none)."""
        return records.read_params(self.client, self.collection, fingerprint)

    def drop_params(self, keep: str) -> None:
        """Delete every stored parameter set except the one of fingerprint ``keep``."""
        records.drop_params(self.client, self.collection, keep)

    # ----------------------------------------------------------------- manifest and journal
    def files(self) -> dict[str, FileRecord]:
        """The manifest: every file whose current version is completely stored."""
        return manifest.read_manifest(self.client, self.collection)

    def commit_file(self, record: FileRecord) -> None:
        """Record ``record`` as the file's completely stored version."""
        manifest.commit_record(self.client, self.collection, record)

    def forget_file(self, source: str) -> None:
        """Delete a file's chunks (every version) and its manifest row."""
        self.chunks_changed += self.count_chunks(source=source)
        self.client.delete(self.collection, filter=f"source == {quote(source)}")
        manifest.delete_record(self.client, self.collection, source)

    def begin_switches(self, switches: Sequence[FileSwitch]) -> None:
        """Journal ``switches`` in ``<collection>__journal`` (one row per 1,800 ids of a
        file); call before writing any of their chunks, and :meth:`end_switches` after
        committing them."""
        journal.begin_switches(self.client, self.collection, switches)

    def journal(self) -> dict[str, FileSwitch | None]:
        """Every journaled switch, by source; ``None`` for a switch whose journal rows were
        not all written (a run stopped inside :meth:`begin_switches`)."""
        return journal.read_journal(self.client, self.collection)

    def end_switches(self, sources: Iterable[str]) -> None:
        """Delete the journal rows of ``sources``."""
        journal.end_switches(self.client, self.collection, sources)

    def flush(self) -> None:
        """Seal the rows written to the chunk collection and the manifest into segments.

        Milvus Lite keeps written rows in an in-memory table that every search and query
        scans row by row (seconds per query at 10k chunks) until they are flushed; call this
        once after a run of writes.
        """
        for name in (self.collection, self.files_collection):
            self.client.flush(name)

    # ----------------------------------------------------------------- chunks
    def upsert_chunks(self, chunks: Sequence[Chunk], embeddings: Embeddings) -> None:
        """Write chunks with their vectors (insert or overwrite by ``chunk_id``), in batches.

        Raises:
            ValueError: ``chunks`` and ``embeddings`` differ in length.
        """
        rows = chunk_rows(chunks, embeddings, language=self.languages)
        for start in range(0, len(rows), BATCH_ROWS):
            self.client.upsert(self.collection, rows[start : start + BATCH_ROWS])
        self.chunks_changed += sum(not chunk.is_section for chunk in chunks)

    def delete_chunks(self, chunk_ids: Iterable[str]) -> None:
        """Delete rows (chunks and section rows) by id; :attr:`chunks_changed` counts the
        chunks among them."""
        ids = list(chunk_ids)
        for start in range(0, len(ids), BATCH_ROWS):
            batch = ids[start : start + BATCH_ROWS]
            condition = f"id in {json.dumps(batch)} and {CHUNK_FILTER}"
            rows = self.client.query(
                self.collection, filter=condition, output_fields=["count(*)"], **STRONG
            )
            self.chunks_changed += int(rows[0]["count(*)"])
            self.client.delete(self.collection, ids=batch)

    def chunk_ids(self, source: str) -> set[str]:
        """Ids of every stored row of ``source``, chunks and section rows (of any version)."""
        rows = self.client.query(
            self.collection, filter=f"source == {quote(source)}", output_fields=["id"], **STRONG
        )
        return {row["id"] for row in rows}

    def existing_chunk_ids(self, chunk_ids: Iterable[str]) -> set[str]:
        """Which of ``chunk_ids`` are stored."""
        return {row["id"] for rows in self._rows_by_id(list(chunk_ids), ["id"]) for row in rows}

    def chunks_at(self, source: str, indexes: Iterable[int]) -> list[Chunk]:
        """The stored chunks of ``source`` at the chunk indexes ``indexes``, by index (an
        index with no chunk, or a section row's negative index, is left out; during a
        file's switch an index can have two chunks, one per ``file_hash``).

        One query per ``BATCH_ROWS`` indexes, at the collection's own consistency like the
        searches (Bounded on a server): chunks are read for hits the search just returned.
        """
        wanted = sorted({int(i) for i in indexes})
        chunks = []
        for start in range(0, len(wanted), BATCH_ROWS):
            batch = ", ".join(map(str, wanted[start : start + BATCH_ROWS]))
            rows = self.client.query(
                self.collection,
                filter=f"source == {quote(source)} and chunk_index in [{batch}] and {CHUNK_FILTER}",
                output_fields=CHUNK_FIELDS,
            )
            chunks.extend(row_chunk(row) for row in rows)
        return sorted(chunks, key=lambda c: c.chunk_index)

    def _rows_by_id(self, chunk_ids: Sequence[str], fields: list[str]) -> Iterator[list[dict]]:
        """The stored rows of ``chunk_ids`` with ``fields``, one query per ``BATCH_ROWS`` ids."""
        for start in range(0, len(chunk_ids), BATCH_ROWS):
            batch = ", ".join(quote(i) for i in chunk_ids[start : start + BATCH_ROWS])
            yield self.client.query(
                self.collection, filter=f"id in [{batch}]", output_fields=fields, **STRONG
            )

    def _count(self, collection: str) -> int:
        rows = self.client.query(collection, filter="", output_fields=["count(*)"], **STRONG)
        return int(rows[0]["count(*)"])

    def count_chunks(self, language: str | None = None, source: str | None = None) -> int:
        """Number of chunks in the collection (section rows not counted); with
        ``language``, of the chunks whose language is that code, with ``source``, of that
        file's chunks (one indexed ``count(*)`` query).

        Raises:
            ValueError: ``language`` given for a collection that records no languages
                (schema v2: :attr:`languages` is false).
        """
        condition = CHUNK_FILTER
        if source is not None:
            condition += f" and source == {quote(source)}"
        if language is not None:
            if not self.languages:
                raise ValueError(f"collection {self.collection!r} records no chunk languages")
            condition += f" and {LANGUAGE_FIELD} == {quote(language)}"
        rows = self.client.query(
            self.collection, filter=condition, output_fields=["count(*)"], **STRONG
        )
        return int(rows[0]["count(*)"])

    def _scan(self, fields: list[str], condition: str = "") -> Iterator[dict]:
        """Every row of the chunk collection (that meets ``condition``) with ``fields``,
        1,000 rows per request."""
        iterator = self.client.query_iterator(
            self.collection, batch_size=1000, filter=condition, output_fields=fields, **STRONG
        )
        while batch := iterator.next():
            yield from batch
        iterator.close()

    def all_chunk_ids(self) -> set[str]:
        """Every chunk id, section rows left out (reads the whole collection)."""
        return {row["id"] for row in self._scan(["id"], CHUNK_FILTER)}

    def sources(self) -> set[str]:
        """Every source that has chunks, committed or not (reads the whole collection)."""
        return {row["source"] for row in self._scan(["source"])}

    def all_chunks(self) -> list[Chunk]:
        """Every stored chunk, section rows left out, without vectors (reads the whole
        collection)."""
        return [row_chunk(row) for row in self._scan(CHUNK_FIELDS, CHUNK_FILTER)]

    def all_rows(self) -> list[Chunk]:
        """Every stored row, chunks and section rows, without vectors (reads the whole
        collection: for refits)."""
        return [row_chunk(row) for row in self._scan(CHUNK_FIELDS)]

    def update_sparse(self, chunk_ids: Sequence[str], matrix: sparse.csr_array) -> None:
        """Overwrite the sparse vectors of stored chunks, leaving every other field as is
        (``matrix`` is ``csr_array [len(chunk_ids), V]``; ids no longer stored are skipped).

        Each batch of rows is read back whole and upserted whole: a partial upsert is a
        Milvus 2.6 feature, and Milvus Lite 2.5 answers one with an error after deleting the
        rows it was given.

        Raises:
            ValueError: ``chunk_ids`` and ``matrix`` differ in length.
        """
        if len(chunk_ids) != matrix.shape[0]:
            raise ValueError("chunk_ids and matrix must have the same number of rows")
        vectors = dict(zip(chunk_ids, sparse_to_milvus(matrix), strict=True))
        fields = [*CHUNK_FIELDS, LEXICAL_FIELD, DENSE_FIELD]
        if self.languages:
            fields.append(LANGUAGE_FIELD)
        for rows in self._rows_by_id(chunk_ids, fields):
            for row in rows:
                row[SPARSE_FIELD] = vectors[row["id"]]
            if rows:
                self.client.upsert(self.collection, rows)

    # ----------------------------------------------------------------- search
    def search(
        self,
        field: str,
        vectors: list,
        limit: int,
        filter: str = "",
    ) -> list[dict]:
        """One ANN search on ``field``, hits best first.

        ``vectors`` are dense vectors for ``dense``, ``{dim: weight}`` dicts for ``sparse``,
        and query strings for ``bm25`` (analyzed by the ``lexical_text`` field's analyzer).
        """
        result = self.client.search(
            self.collection,
            data=vectors,
            anns_field=field,
            limit=limit,
            filter=filter,
            search_params=self.dense_search_params
            if field == DENSE_FIELD
            else {"metric_type": "BM25" if field == BM25_FIELD else "IP"},
            output_fields=CHUNK_FIELDS,
        )
        return list(result[0])

    def hybrid_search(self, requests: list[AnnSearchRequest], ranker, limit: int) -> list[dict]:
        """Milvus ``hybrid_search``: the requests' hit lists fused by ``ranker``, best first."""
        result = self.client.hybrid_search(
            self.collection, requests, ranker, limit=limit, output_fields=CHUNK_FIELDS
        )
        return list(result[0])

    def stats(self) -> dict:
        """Profile, file and chunk counts, for display."""
        return {
            "collection": self.collection,
            "profile": self.profile.describe() if self.profile else None,
            "files": self._count(self.files_collection),
            "chunks": self.count_chunks(),
        }
