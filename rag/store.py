"""The Milvus collection of chunks: schema, profile record, file manifest, writes and reads.

One URI works for both deployments: a local path (a Milvus Lite db, a directory ending in
``.db``) or a server URL (``http://127.0.0.1:19530``: ``milvus-lite server`` or Milvus).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient
from scipy import sparse

from rag import lite
from rag.chunking import embedding_text
from rag.embedders.base import Embedder, Embeddings, fitted_sparse
from rag.types import Chunk

# v2: BM25 reads `lexical_text` (title, heading path and chunk text), no longer `text` alone.
SCHEMA_VERSION = 2
PROFILE_KEY = "rag.profile"  # the meta record of the collection's CollectionProfile
META_SUFFIX = "__meta"  # the sibling collection of records about the collection (key → JSON)
PARAMS_SUFFIX = "__sparse_params"  # the sibling collection of fitted sparse parameters
_PARAMS_PART_CHARS = 60_000  # params JSON is ASCII: characters = bytes < VARCHAR's 65535
FILES_SUFFIX = "__files"  # the sibling collection of the file manifest
JOURNAL_SUFFIX = "__journal"  # the sibling collection of unfinished file switches
_JOURNAL_IDS = 1_800  # chunk ids per journal row: 1,800 × (32 hex + 1 space) < VARCHAR's 65535
DENSE_FIELD = "dense"
SPARSE_FIELD = "sparse"
LEXICAL_FIELD = "lexical_text"  # what BM25 reads: the embedded text (rag.chunking.embedding_text)
BM25_FIELD = "bm25"  # filled by Milvus's BM25 function from LEXICAL_FIELD (its analyzer)
# The analyzers of LEXICAL_FIELD (Milvus docs, "Analyzer Overview"; milvus-lite 3.x has these
# two tokenizers): `standard` splits on spaces and punctuation and lowercases, which leaves a
# run of Chinese characters one token; `jieba` segments Chinese words with its dictionary.
LEXICAL_ANALYZERS = {"standard": {"tokenizer": "standard"}, "jieba": {"tokenizer": "jieba"}}
CHUNK_FIELDS = ["id", "text", "source", "title", "heading", "chunk_index", "page", "file_hash"]
# VARCHAR limits are in bytes of UTF-8 (Milvus docs, "String Field").
MAX_SOURCE_BYTES = 2_048  # a file path: the chunks' `source`, the manifest's and journal's key
_MAX_BYTES = {
    "text": 65_535, LEXICAL_FIELD: 65_535, "source": MAX_SOURCE_BYTES, "title": 1_024,
    "heading": 2_048,
}  # fmt: skip
_BATCH_ROWS = 256
# Dense index types: build params, search params. HNSW: Malkov & Yashunin 2018, Milvus's
# suggested M and efConstruction. IVF_FLAT: nlist = 4·√N for N ≈ 65k chunks, the low end
# of the faiss wiki's "Guidelines to choose an index" (4·√N to 16·√N lists); nprobe 32 of
# 1,024 lists scans about 3% of the vectors (Milvus docs, "IVF_FLAT").
DENSE_INDEXES: dict[str, tuple[dict, dict]] = {
    "FLAT": ({}, {}),
    "HNSW": ({"M": 16, "efConstruction": 200}, {}),
    "IVF_FLAT": ({"nlist": 1024}, {"nprobe": 32}),
}
_PLACEHOLDER_VEC = [1.0, 0.0]  # the vector of rows in scalar tables (MilvusStore._create_table)
_SCALAR_INDEX_FIELDS = ("source", "file_hash")
# Reads of the store's own bookkeeping must see the writes before them. Milvus server
# collections default to Bounded consistency (reads may miss writes of the last seconds);
# searches keep that default, bookkeeping reads ask for Strong (Milvus docs, "Consistency").
_STRONG = {"consistency_level": "Strong"}
# pymilvus logs every failed RPC with a traceback at ERROR, and iterator notes at WARNING;
# this module turns failures into exceptions with a clear message instead.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


class StoreError(RuntimeError):
    """A Milvus problem the user can act on; the message says what to do."""


class StoreLockedError(StoreError):
    """The Milvus Lite db is open in another process (one process per db)."""


class ProfileMismatchError(StoreError):
    """The collection was built by another embedder profile or schema version."""


@dataclass(frozen=True)
class CollectionProfile:
    """What built a collection, recorded beside it so vectors are never mixed.

    Attributes:
        profile: embedder profile name (a named profile, a hybrid function, or
            ``DENSE+SPARSE``; see ``rag.embedders.registry``).
        dense_model, sparse_model: model ids or paths of the dense and sparse functions
            (``provider:model`` for an API function, ``bm25`` for BM25).
        dim: dense vector dimension.
        vocab_size: sparse vector dimension (vocabulary size; for a fitted function the
            fitted vocabulary's, 0 before the first fit).
        schema_version: version of this module's schema.
        sparse_params: fingerprint of the fitted sparse parameters (BM25) the sparse vectors
            were computed with; ``""`` for functions without any, and before the first fit.
    """

    profile: str
    dense_model: str
    sparse_model: str
    dim: int
    vocab_size: int
    schema_version: int = SCHEMA_VERSION
    sparse_params: str = ""

    @classmethod
    def of(cls, embedder: Embedder) -> CollectionProfile:
        """The profile record of ``embedder``."""
        fitted = fitted_sparse(embedder)
        return cls(
            embedder.profile,
            embedder.dense_name,
            embedder.sparse_name,
            embedder.dim,
            embedder.vocab_size,
            sparse_params=fitted.fingerprint if fitted is not None else "",
        )

    @property
    def fitted(self) -> bool:
        """Whether the sparse function is fitted on the corpus (its parameters recorded, or
        not fitted yet: vocabulary 0)."""
        return bool(self.sparse_params) or self.vocab_size == 0

    def composition(self) -> CollectionProfile:
        """The record without its fitted state: what must match for vectors to be
        comparable before fitted parameters are loaded."""
        return replace(self, vocab_size=0, sparse_params="") if self.fitted else self

    def describe(self) -> str:
        """One human line: ``profile (dense ×dim, sparse ×vocab, schema vN)``."""
        params = f", params {self.sparse_params}" if self.sparse_params else ""
        return (
            f"{self.profile} (dense {self.dense_model} ×{self.dim}, sparse {self.sparse_model} "
            f"×{self.vocab_size}{params}, schema v{self.schema_version})"
        )


@dataclass(frozen=True)
class FileRecord:
    """A manifest row: the version of a file whose chunks are completely stored.

    Attributes:
        source: the file path (the chunks' ``source``).
        file_hash: sha256 hex of the file's bytes.
        chunking: the chunker settings that cut it (``Chunker.signature``); a file cut
            with other settings is chunked again.
        size: bytes.
        mtime_ns: modification time, nanoseconds since the epoch.
        n_chunks: chunks stored for this version.
        ingested_at: unix seconds when the version was committed.
    """

    source: str
    file_hash: str
    chunking: str
    size: int
    mtime_ns: int
    n_chunks: int
    ingested_at: int


@dataclass(frozen=True)
class FileSwitch:
    """A journaled switch of one file to a new version (``ingest.pipeline`` runs it).

    Attributes:
        record: the manifest row of the new version, written when the switch completes.
        added: ids of the new version's chunks that were not stored when the switch began.
        stale: ids of the stored chunks that the new version does not have.
    """

    record: FileRecord
    added: frozenset[str]
    stale: frozenset[str]


def sparse_to_milvus(matrix: sparse.csr_array) -> list[dict[int, float]]:
    """Rows of a ``csr_array [n, V]`` as the ``{dimension: weight}`` dicts Milvus accepts.

    Milvus rejects an empty sparse vector. An all-zero row (text whose every term has zero
    weight) is stored as ``{V: 1e-9}``: dimension ``V`` lies outside every query's
    vocabulary, so the row is valid but never matches a sparse query.
    """
    matrix = sparse.csr_array(matrix)
    vocab_size = matrix.shape[1]
    rows = []
    for i in range(matrix.shape[0]):
        start, end = matrix.indptr[i], matrix.indptr[i + 1]
        row = {
            int(k): float(v)
            for k, v in zip(matrix.indices[start:end], matrix.data[start:end], strict=True)
            if v > 0
        }
        rows.append(row or {vocab_size: 1e-9})
    return rows


def _journal_rows(switch: FileSwitch) -> list[dict]:
    """The journal rows of ``switch``: ids space-separated, at most ``_JOURNAL_IDS`` of
    each kind per row; row 0 also holds the manifest record as JSON."""
    source = switch.record.source
    added, stale = sorted(switch.added), sorted(switch.stale)
    parts = max(1, -(-max(len(added), len(stale)) // _JOURNAL_IDS))
    return [
        {
            "key": f"{part:06d}:{source}",
            "source": source,
            "part": part,
            "parts": parts,
            "record": json.dumps(asdict(switch.record), ensure_ascii=False) if part == 0 else "",
            "added": " ".join(added[part * _JOURNAL_IDS : (part + 1) * _JOURNAL_IDS]),
            "stale": " ".join(stale[part * _JOURNAL_IDS : (part + 1) * _JOURNAL_IDS]),
            "vec": _PLACEHOLDER_VEC,
        }
        for part in range(parts)
    ]


def fit_bytes(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` bytes of UTF-8 (never inside a character)."""
    encoded = value.encode("utf-8")
    return value if len(encoded) <= limit else encoded[:limit].decode("utf-8", "ignore")


def _quote(value: str) -> str:
    # A Milvus string literal: double quotes, escaped. Milvus reads no \u escapes, so
    # non-ASCII characters stay as they are.
    return json.dumps(value, ensure_ascii=False)


def connect(uri: str, token: str | None = None) -> MilvusClient:
    """A ``MilvusClient`` for a Lite db path (``*.db``) or a server URL.

    Raises:
        StoreLockedError: the Lite db is open in another process.
        StoreError: the server cannot be reached, or the db cannot be opened (a path the
            engine refuses, or a db written by the other Milvus Lite engine; see
            ``rag.lite.Engine.check_db``).
    """
    path = lite.lite_path(uri)
    if path is not None:
        try:
            engine = lite.engine()
            engine.check_db(path, uri)
        except lite.LiteError as error:
            raise StoreError(str(error)) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        if engine.locked_elsewhere(path):
            raise StoreLockedError(lite.in_use_message(uri))
    try:
        client = MilvusClient(uri=uri if path is None else str(path), token=token or "")
    except Exception as error:  # noqa: BLE001 - pymilvus raises several unrelated types here
        raise StoreError(f"cannot open Milvus at {uri}: {error}") from None
    if path is not None:
        lite.open_clients[str(path)] += 1
    return client


def disconnect(client: MilvusClient, uri: str) -> None:
    """Close ``client``; the last client of a Lite db also stops its engine and lock."""
    client.close()
    path = lite.lite_path(uri)
    if path is not None and lite.open_clients[str(path)] > 0:
        lite.open_clients[str(path)] -= 1
        if lite.open_clients[str(path)] == 0:
            lite.release(path)


def read_records(client: MilvusClient, collection: str) -> dict[str, str]:
    """The records kept about ``collection`` (``rag.profile``, a fitted function's state):
    the rows of ``<collection>__meta``, or, for a collection made before that table existed,
    its collection properties; ``{}`` when it has neither. The meta table must be loaded.

    A side collection rather than collection properties: Milvus Lite 2.5 drops the
    properties given at creation and does not implement ``alter_collection_properties``.
    """
    meta = f"{collection}{META_SUFFIX}"
    if client.has_collection(meta):
        rows = client.query(meta, filter='key != ""', output_fields=["key", "value"], **_STRONG)
        return {row["key"]: row["value"] for row in rows}
    properties = client.describe_collection(collection).get("properties", {})
    return {k: v for k, v in properties.items() if k.startswith("rag.")}


class MilvusStore:
    """The chunk collection, the records about it (``<collection>__meta``), its file
    manifest (``<collection>__files``) and the journal of unfinished file switches
    (``<collection>__journal``, created on first use).

    Use :meth:`open`; the constructor only stores its arguments.

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
        self.chunks_changed = 0  # chunk rows written or deleted through this object

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
                and ``create`` is false.
            ProfileMismatchError: the collection was built by another profile or schema.
        """
        store = cls(connect(uri, token), collection, dense_index, uri, analyzer)
        try:
            if not store.client.has_collection(collection):
                if not create or profile is None:
                    raise StoreError(
                        f"no collection {collection!r} at {uri}: ingest documents first "
                        "(python -m ingest PATH)"
                    )
                store._create(profile)
            if not store.client.has_collection(store.meta_collection):
                store._create_meta()  # made before the meta table existed: move its records
            store.client.load_collection(store.meta_collection)
            if not store.client.has_collection(store.files_collection):
                store._create_manifest()  # new, or a run was killed between the creations
            store.profile = store._recorded_profile()
            if profile is not None:
                store.check_profile(profile)
            store._load_and_warm_up()
        except StoreError:
            store.close()
            raise
        return store

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
        # The profile first: a run killed before the chunk collection exists leaves records
        # of a missing collection, which the next run overwrites when it creates it.
        if not self.client.has_collection(self.meta_collection):
            self._create_meta()
        self.write_records({PROFILE_KEY: json.dumps(asdict(profile))})
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=_MAX_BYTES["text"])
        # BM25 reads what the dense and sparse encoders read: title and heading path give a
        # chunk the words of its context (titles carry much of a scientific abstract's terms).
        schema.add_field(
            LEXICAL_FIELD,
            DataType.VARCHAR,
            max_length=_MAX_BYTES[LEXICAL_FIELD],
            enable_analyzer=True,
            analyzer_params=LEXICAL_ANALYZERS[self.analyzer],
        )
        schema.add_field("source", DataType.VARCHAR, max_length=_MAX_BYTES["source"])
        schema.add_field("title", DataType.VARCHAR, max_length=_MAX_BYTES["title"])
        schema.add_field("heading", DataType.VARCHAR, max_length=_MAX_BYTES["heading"])
        schema.add_field("chunk_index", DataType.INT32)
        schema.add_field("page", DataType.INT32)
        schema.add_field("file_hash", DataType.VARCHAR, max_length=64)
        schema.add_field(DENSE_FIELD, DataType.FLOAT_VECTOR, dim=profile.dim)
        schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field(BM25_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=[LEXICAL_FIELD],
                output_field_names=[BM25_FIELD],
            )
        )
        index = self.client.prepare_index_params()
        build, _ = DENSE_INDEXES[self.dense_index]
        index.add_index(DENSE_FIELD, index_type=self.dense_index, metric_type="IP", params=build)
        index.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        index.add_index(BM25_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        for field in _SCALAR_INDEX_FIELDS:
            index.add_index(field, index_type="INVERTED")
        self.client.create_collection(self.collection, schema=schema, index_params=index)

    def _create_meta(self) -> None:
        """Create ``<collection>__meta``, holding the chunk collection's records; a chunk
        collection that kept them in its properties (before this table) has them copied."""
        exists = self.client.has_collection(self.collection)
        legacy = read_records(self.client, self.collection) if exists else {}
        meta = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        meta.add_field("value", DataType.VARCHAR, max_length=65_535)
        self._create_table(self.meta_collection, meta)
        if legacy:
            self.write_records(legacy)

    def _create_manifest(self) -> None:
        files = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        files.add_field("source", DataType.VARCHAR, is_primary=True, max_length=MAX_SOURCE_BYTES)
        files.add_field("file_hash", DataType.VARCHAR, max_length=64)
        files.add_field("chunking", DataType.VARCHAR, max_length=64)
        files.add_field("size", DataType.INT64)
        files.add_field("mtime_ns", DataType.INT64)
        files.add_field("n_chunks", DataType.INT32)
        files.add_field("ingested_at", DataType.INT64)
        self._create_table(self.files_collection, files)

    def _create_table(self, name: str, schema) -> None:
        """Create collection ``name`` of scalar rows. Milvus needs one vector field, so a
        2-d ``vec`` (rows write ``_PLACEHOLDER_VEC``) with a FLAT index is added to ``schema``."""
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
        index = self.client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="L2")
        self.client.create_collection(name, schema=schema, index_params=index)

    def _recorded_profile(self) -> CollectionProfile:
        """The profile the collection records.

        Raises:
            ProfileMismatchError: no record, a record of another schema version, or one this
                version cannot read (the way out: another --collection, or --reset).
        """
        raw = self.read_record(PROFILE_KEY)
        if raw is None:
            raise ProfileMismatchError(
                f"collection {self.collection!r} was not created by this tool (no "
                f"{PROFILE_KEY} record): use another --collection, or --reset it"
            )
        way_out = (
            "ingest into another --collection, or rebuild this one with "
            "`python -m ingest PATH --reset`."
        )
        try:
            record = json.loads(raw)
            version = record["schema_version"]
            if version == SCHEMA_VERSION:
                return CollectionProfile(**record)
        except (ValueError, TypeError, KeyError):
            raise ProfileMismatchError(
                f"collection {self.collection!r} at {self.uri} has a {PROFILE_KEY} record "
                f"this version cannot read: {way_out}"
            ) from None
        raise ProfileMismatchError(
            f"collection {self.collection!r} at {self.uri} was built with schema v{version} of "
            f"this tool, which reads schema v{SCHEMA_VERSION}: {way_out}"
        )

    def check_profile(self, wanted: CollectionProfile) -> None:
        """Refuse an embedder whose vectors cannot be mixed with the stored ones.

        A fitted sparse function that has no parameters loaded yet (``wanted.sparse_params``
        empty) is checked on its composition only: it will load the recorded parameters.

        Raises:
            ProfileMismatchError: another composition, model, dimension or schema (the way
                out: the matching profile, another --collection, or --reset), or other fitted
                sparse parameters.
        """
        assert self.profile is not None
        if self.profile.composition() != wanted.composition():
            raise ProfileMismatchError(
                f"collection {self.collection!r} at {self.uri} was built with "
                f"{self.profile.describe()}, but the current settings use {wanted.describe()}. "
                "Vectors of different models cannot be mixed: use the matching profile "
                "(--profile, or --dense and --sparse; RAG_PROFILE, RAG_DENSE, RAG_SPARSE and the "
                "model settings), ingest into another --collection, or rebuild this one with "
                "`python -m ingest PATH --reset`."
            )
        if wanted.sparse_params and self.profile != wanted:
            raise ProfileMismatchError(
                f"collection {self.collection!r} at {self.uri} holds sparse vectors of "
                f"{self.profile.sparse_model} parameters {self.profile.sparse_params or '(none)'}"
                f", but the query side has parameters {wanted.sparse_params}: load the "
                "collection's parameters (rag.embedders.fitting.load_params), or refit with "
                "`python -m ingest PATH --refit-bm25`."
            )

    def records(self) -> dict[str, str]:
        """The records about the chunk collection, by key (read from Milvus each time)."""
        return read_records(self.client, self.collection)

    def read_record(self, key: str) -> str | None:
        """One record about the chunk collection (``None`` when unset or empty)."""
        return self.records().get(key) or None

    def write_records(self, records: dict[str, str]) -> None:
        """Set records about the chunk collection (in one upsert request).

        Raises:
            ValueError: a key over 64 bytes or a value over 65,535 bytes of UTF-8.
        """
        for key, value in records.items():
            if len(key.encode()) > 64 or len(value.encode()) > 65_535:
                raise ValueError(f"record {key!r} is too long for {self.meta_collection}")
        rows = [{"key": k, "value": v, "vec": _PLACEHOLDER_VEC} for k, v in records.items()]
        self.client.upsert(self.meta_collection, rows)

    def _load_and_warm_up(self) -> None:
        for name in (self.collection, self.files_collection):
            self.client.load_collection(name)
        built = self.client.describe_index(self.collection, DENSE_FIELD).get("index_type", "")
        _, search = DENSE_INDEXES.get(built, ({}, {}))
        self.dense_search_params = {"metric_type": "IP", "params": search}
        assert self.profile is not None
        self.client.search(
            self.collection,
            data=[np.ones(self.profile.dim, np.float32) / np.sqrt(self.profile.dim)],
            anns_field=DENSE_FIELD,
            limit=1,
            output_fields=["id"],
        )

    # ----------------------------------------------------------------- chunks
    def upsert_chunks(self, chunks: Sequence[Chunk], embeddings: Embeddings) -> None:
        """Write chunks with their vectors (insert or overwrite by ``chunk_id``), in batches.

        Raises:
            ValueError: ``chunks`` and ``embeddings`` differ in length.
        """
        if len(chunks) != embeddings.dense.shape[0] or len(chunks) != embeddings.sparse.shape[0]:
            raise ValueError("chunks and embeddings must have the same number of rows")
        sparse_rows = sparse_to_milvus(embeddings.sparse)
        rows = [
            {
                "id": c.chunk_id,
                "text": fit_bytes(c.text, _MAX_BYTES["text"]),
                LEXICAL_FIELD: fit_bytes(embedding_text(c), _MAX_BYTES[LEXICAL_FIELD]),
                "source": fit_bytes(c.source, _MAX_BYTES["source"]),
                "title": fit_bytes(c.title, _MAX_BYTES["title"]),
                "heading": fit_bytes(c.heading, _MAX_BYTES["heading"]),
                "chunk_index": c.chunk_index,
                "page": c.page,
                "file_hash": c.file_hash,
                DENSE_FIELD: embeddings.dense[i],
                SPARSE_FIELD: sparse_rows[i],
            }
            for i, c in enumerate(chunks)
        ]
        for start in range(0, len(rows), _BATCH_ROWS):
            self.client.upsert(self.collection, rows[start : start + _BATCH_ROWS])
        self.chunks_changed += len(rows)

    def delete_chunks(self, chunk_ids: Iterable[str]) -> None:
        """Delete chunks by id."""
        ids = list(chunk_ids)
        for start in range(0, len(ids), _BATCH_ROWS):
            self.client.delete(self.collection, ids=ids[start : start + _BATCH_ROWS])
        self.chunks_changed += len(ids)

    def chunk_ids(self, source: str) -> set[str]:
        """Ids of every stored chunk of ``source`` (of any version)."""
        rows = self.client.query(
            self.collection, filter=f"source == {_quote(source)}", output_fields=["id"], **_STRONG
        )
        return {row["id"] for row in rows}

    def existing_chunk_ids(self, chunk_ids: Iterable[str]) -> set[str]:
        """Which of ``chunk_ids`` are stored."""
        return {row["id"] for rows in self._rows_by_id(list(chunk_ids), ["id"]) for row in rows}

    def _rows_by_id(self, chunk_ids: Sequence[str], fields: list[str]) -> Iterator[list[dict]]:
        """The stored rows of ``chunk_ids`` with ``fields``, one query per ``_BATCH_ROWS`` ids."""
        for start in range(0, len(chunk_ids), _BATCH_ROWS):
            batch = ", ".join(_quote(i) for i in chunk_ids[start : start + _BATCH_ROWS])
            yield self.client.query(
                self.collection, filter=f"id in [{batch}]", output_fields=fields, **_STRONG
            )

    def _count(self, collection: str) -> int:
        rows = self.client.query(collection, filter="", output_fields=["count(*)"], **_STRONG)
        return int(rows[0]["count(*)"])

    def count_chunks(self) -> int:
        """Number of chunks in the collection."""
        return self._count(self.collection)

    def _scan(self, field: str) -> set:
        iterator = self.client.query_iterator(
            self.collection, batch_size=1000, filter="", output_fields=[field], **_STRONG
        )
        values: set = set()
        while batch := iterator.next():
            values.update(row[field] for row in batch)
        iterator.close()
        return values

    def all_chunk_ids(self) -> set[str]:
        """Every chunk id (reads the whole collection)."""
        return self._scan("id")

    def sources(self) -> set[str]:
        """Every source that has chunks, committed or not (reads the whole collection)."""
        return self._scan("source")

    def all_chunks(self) -> list[Chunk]:
        """Every stored chunk, without vectors (reads the whole collection: for refits)."""
        iterator = self.client.query_iterator(
            self.collection, batch_size=1000, filter="", output_fields=CHUNK_FIELDS, **_STRONG
        )
        chunks: list[Chunk] = []
        while batch := iterator.next():
            chunks.extend(
                Chunk(
                    chunk_id=row["id"],
                    source=row["source"],
                    title=row["title"],
                    heading=row["heading"],
                    chunk_index=int(row["chunk_index"]),
                    page=int(row["page"]),
                    text=row["text"],
                    file_hash=row["file_hash"],
                )
                for row in batch
            )
        iterator.close()
        return chunks

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
        for rows in self._rows_by_id(chunk_ids, [*CHUNK_FIELDS, LEXICAL_FIELD, DENSE_FIELD]):
            for row in rows:
                row[SPARSE_FIELD] = vectors[row["id"]]
            if rows:
                self.client.upsert(self.collection, rows)

    # ----------------------------------------------------------------- fitted sparse params
    def _params_ready(self, create: bool) -> bool:
        """Load the parameters collection (creating it when asked); whether it exists."""
        name = self.params_collection
        if not self.client.has_collection(name):
            if not create:
                return False
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("part", DataType.VARCHAR, max_length=_PARAMS_PART_CHARS)
            self._create_table(name, schema)
        self.client.load_collection(name)
        return True

    def write_params(self, fingerprint: str, text: str) -> None:
        """Store fitted sparse parameters (ASCII text, e.g. BM25's JSON) under their
        fingerprint in ``<collection>__sparse_params``, beside the chunks.

        Raises:
            ValueError: ``text`` is not ASCII.
        """
        if not text.isascii():
            raise ValueError("sparse parameters must be ASCII text")
        self._params_ready(create=True)
        parts = [text[i : i + _PARAMS_PART_CHARS] for i in range(0, len(text), _PARAMS_PART_CHARS)]
        rows = [
            {"id": f"{fingerprint}:{i:06d}", "part": part, "vec": _PLACEHOLDER_VEC}
            for i, part in enumerate(parts or [""])
        ]
        for start in range(0, len(rows), 32):
            self.client.upsert(self.params_collection, rows[start : start + 32])

    def read_params(self, fingerprint: str) -> str | None:
        """The parameters stored under ``fingerprint`` (``None`` when there are none)."""
        if not self._params_ready(create=False):
            return None
        rows = self.client.query(
            self.params_collection,
            filter=f"id like {_quote(fingerprint + ':%')}",
            output_fields=["id", "part"],
            **_STRONG,
        )
        if not rows:
            return None
        return "".join(row["part"] for row in sorted(rows, key=lambda row: row["id"]))

    def drop_params(self, keep: str) -> None:
        """Delete every stored parameter set except the one of fingerprint ``keep``."""
        if self._params_ready(create=False):
            rows = self.client.query(
                self.params_collection, filter='id != ""', output_fields=["id"], **_STRONG
            )
            # By id: Milvus Lite 2.5 fails on a `not (id like …)` delete expression.
            stale = [row["id"] for row in rows if not row["id"].startswith(f"{keep}:")]
            if stale:
                self.client.delete(self.params_collection, ids=stale)

    # ----------------------------------------------------------------- manifest
    def files(self) -> dict[str, FileRecord]:
        """The manifest: every file whose current version is completely stored."""
        iterator = self.client.query_iterator(
            self.files_collection,
            batch_size=1000,
            filter="",
            output_fields=list(FileRecord.__dataclass_fields__),
            **_STRONG,
        )
        records: dict[str, FileRecord] = {}
        while batch := iterator.next():
            for row in batch:
                record = FileRecord(**{k: row[k] for k in FileRecord.__dataclass_fields__})
                records[record.source] = record
        iterator.close()
        return records

    def commit_file(self, record: FileRecord) -> None:
        """Record ``record`` as the file's completely stored version."""
        row = asdict(record) | {"vec": _PLACEHOLDER_VEC}
        self.client.upsert(self.files_collection, [row])

    def forget_file(self, source: str) -> None:
        """Delete a file's chunks (every version) and its manifest row."""
        self.chunks_changed += len(self.chunk_ids(source))
        self.client.delete(self.collection, filter=f"source == {_quote(source)}")
        self.client.delete(self.files_collection, ids=[source])

    def flush(self) -> None:
        """Seal the rows written to the chunk collection and the manifest into segments.

        Milvus Lite keeps written rows in an in-memory table that every search and query
        scans row by row (seconds per query at 10k chunks) until they are flushed; call this
        once after a run of writes.
        """
        for name in (self.collection, self.files_collection):
            self.client.flush(name)

    # ----------------------------------------------------------------- switch journal
    def _journal_ready(self, create: bool) -> bool:
        """Load the journal collection (creating it when asked); whether it exists."""
        name = self.journal_collection
        if not self.client.has_collection(name):
            if not create:
                return False
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(
                "key", DataType.VARCHAR, is_primary=True, max_length=MAX_SOURCE_BYTES + 7
            )
            schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
            schema.add_field("part", DataType.INT32)
            schema.add_field("parts", DataType.INT32)
            schema.add_field("record", DataType.VARCHAR, max_length=65_535)
            schema.add_field("added", DataType.VARCHAR, max_length=65_535)
            schema.add_field("stale", DataType.VARCHAR, max_length=65_535)
            self._create_table(name, schema)
        self.client.load_collection(name)
        return True

    def begin_switches(self, switches: Sequence[FileSwitch]) -> None:
        """Journal ``switches`` in ``<collection>__journal`` (one row per 1,800 ids of a
        file); call before writing any of their chunks, and :meth:`end_switches` after
        committing them."""
        rows = [row for switch in switches for row in _journal_rows(switch)]
        self._journal_ready(create=True)
        for start in range(0, len(rows), 64):  # a row holds up to ~120 kB of ids
            self.client.upsert(self.journal_collection, rows[start : start + 64])

    def journal(self) -> dict[str, FileSwitch | None]:
        """Every journaled switch, by source; ``None`` for a switch whose journal rows were
        not all written (a run stopped inside :meth:`begin_switches`)."""
        if not self._journal_ready(create=False):
            return {}
        iterator = self.client.query_iterator(
            self.journal_collection,
            batch_size=64,
            filter="",
            output_fields=["source", "part", "parts", "record", "added", "stale"],
            **_STRONG,
        )
        rows: dict[str, dict[int, dict]] = {}
        while batch := iterator.next():
            for row in batch:
                rows.setdefault(row["source"], {})[row["part"]] = row
        iterator.close()
        switches: dict[str, FileSwitch | None] = {}
        for source, parts in rows.items():
            first = parts.get(0)
            if first is None or set(parts) != set(range(first["parts"])):
                switches[source] = None
                continue
            switches[source] = FileSwitch(
                FileRecord(**json.loads(first["record"])),
                frozenset(i for part in parts.values() for i in part["added"].split()),
                frozenset(i for part in parts.values() for i in part["stale"].split()),
            )
        return switches

    def end_switches(self, sources: Iterable[str]) -> None:
        """Delete the journal rows of ``sources``."""
        quoted = [_quote(source) for source in sources]
        if quoted and self._journal_ready(create=False):
            for start in range(0, len(quoted), _BATCH_ROWS):
                batch = ", ".join(quoted[start : start + _BATCH_ROWS])
                self.client.delete(self.journal_collection, filter=f"source in [{batch}]")

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


__all__ = [
    "CollectionProfile",
    "FileRecord",
    "FileSwitch",
    "MilvusStore",
    "ProfileMismatchError",
    "StoreError",
    "StoreLockedError",
    "connect",
    "disconnect",
    "sparse_to_milvus",
]
