"""The chunk collection's schema (fields, byte limits, BM25 analyzers, indexes) and scalar tables.

Beside the chunk collection, the store keeps scalar side tables (``<collection>__meta``,
``__files``, ``__journal``, ``__sparse_params``); :func:`create_table` makes one.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pymilvus import CollectionSchema, DataType, Function, FunctionType, MilvusClient

# v2: BM25 reads `lexical_text` (title, heading path and chunk text), no longer `text` alone.
# v3: each chunk's language (`language`). A v2 collection is still read and searched: its
# chunks' languages are unknown (rag.language then keeps the lexical list).
# v4: the BM25 analyzers lowercase (LEXICAL_ANALYZERS). A v2 or v3 collection is still read
# and searched; its full-text BM25 matches case ("Milvus" is not "milvus").
SCHEMA_VERSION = 4
READABLE_SCHEMA_VERSIONS = (2, 3, 4)
DENSE_FIELD = "dense"
SPARSE_FIELD = "sparse"
LEXICAL_FIELD = "lexical_text"  # what BM25 reads: the embedded text (rag.chunking.embedding_text)
BM25_FIELD = "bm25"  # filled by Milvus's BM25 function from LEXICAL_FIELD (its analyzer)
LANGUAGE_FIELD = "language"  # the chunk text's language code (rag.language), "" when unknown
# Rows of the chunk collection are chunks (chunk_index >= 0) and section rows (negative
# chunk_index, rag.chunking.section_index): every search and count says which it reads.
# A collection ingested without section rows simply matches no SECTION_FILTER row.
CHUNK_FILTER = "chunk_index >= 0"
SECTION_FILTER = "chunk_index < 0"
# The analyzers of LEXICAL_FIELD (Milvus docs, "Analyzer Overview", "Standard Analyzer"): the
# `standard` tokenizer splits on spaces and punctuation, which leaves a run of Chinese
# characters one token; `jieba` segments Chinese words with its dictionary. A tokenizer alone
# keeps case, so each has the `lowercase` filter: the built-in `standard` analyzer's pair.
LEXICAL_ANALYZERS = {
    name: {"tokenizer": name, "filter": ["lowercase"]} for name in ("standard", "jieba")
}
CHUNK_FIELDS = ["id", "text", "source", "title", "heading", "chunk_index", "page", "file_hash"]
# VARCHAR limits are in bytes of UTF-8 (Milvus docs, "String Field").
MAX_SOURCE_BYTES = 2_048  # a file path: the chunks' `source`, the manifest's and journal's key
MAX_BYTES = {
    "text": 65_535, LEXICAL_FIELD: 65_535, "source": MAX_SOURCE_BYTES, "title": 1_024,
    "heading": 2_048,
}  # fmt: skip
BATCH_ROWS = 256  # rows per write, ids per `id in [...]` query or delete
# Dense index types: build params, search params. HNSW: Malkov & Yashunin 2018, Milvus's
# suggested M and efConstruction. IVF_FLAT: nlist = 4·√N for N ≈ 65k chunks, the low end
# of the faiss wiki's "Guidelines to choose an index" (4·√N to 16·√N lists); nprobe 32 of
# 1,024 lists scans about 3% of the vectors (Milvus docs, "IVF_FLAT").
DENSE_INDEXES: dict[str, tuple[dict, dict]] = {
    "FLAT": ({}, {}),
    "HNSW": ({"M": 16, "efConstruction": 200}, {}),
    "IVF_FLAT": ({"nlist": 1024}, {"nprobe": 32}),
}
PLACEHOLDER_VEC = [1.0, 0.0]  # the vector of rows in scalar tables (create_table)
_SCALAR_INDEX_FIELDS = ("source", "file_hash", LANGUAGE_FIELD)
# Reads of the store's own bookkeeping must see the writes before them. Milvus server
# collections default to Bounded consistency (reads may miss writes of the last seconds);
# searches keep that default, bookkeeping reads ask for Strong (Milvus docs, "Consistency").
STRONG = {"consistency_level": "Strong"}


def fit_bytes(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` bytes of UTF-8 (never inside a character)."""
    encoded = value.encode("utf-8")
    return value if len(encoded) <= limit else encoded[:limit].decode("utf-8", "ignore")


def quote(value: str) -> str:
    """``value`` as a Milvus filter string literal: double quotes, escaped. Milvus reads no
    ``\\u`` escapes, so non-ASCII characters stay as they are."""
    return json.dumps(value, ensure_ascii=False)


def create_chunk_collection(
    client: MilvusClient, name: str, dim: int, dense_index: str, analyzer: str
) -> None:
    """Create the chunk collection ``name``: the chunk fields with ``LANGUAGE_FIELD``
    (indexed, for counts per language), a ``dim``-dimensional dense
    vector indexed by ``dense_index`` (a key of ``DENSE_INDEXES``), the sparse vector, and
    Milvus's BM25 function over ``LEXICAL_FIELD`` with ``analyzer`` (a key of
    ``LEXICAL_ANALYZERS``)."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_BYTES["text"])
    # BM25 reads what the dense and sparse encoders read: title and heading path give a
    # chunk the words of its context (titles carry much of a scientific abstract's terms).
    schema.add_field(
        LEXICAL_FIELD,
        DataType.VARCHAR,
        max_length=MAX_BYTES[LEXICAL_FIELD],
        enable_analyzer=True,
        analyzer_params=LEXICAL_ANALYZERS[analyzer],
    )
    schema.add_field("source", DataType.VARCHAR, max_length=MAX_BYTES["source"])
    schema.add_field("title", DataType.VARCHAR, max_length=MAX_BYTES["title"])
    schema.add_field("heading", DataType.VARCHAR, max_length=MAX_BYTES["heading"])
    schema.add_field("chunk_index", DataType.INT32)
    schema.add_field("page", DataType.INT32)
    schema.add_field("file_hash", DataType.VARCHAR, max_length=64)
    # Milvus Lite 2.5 has neither nullable fields nor default values: every row writes it.
    schema.add_field(LANGUAGE_FIELD, DataType.VARCHAR, max_length=16)
    schema.add_field(DENSE_FIELD, DataType.FLOAT_VECTOR, dim=dim)
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
    index = client.prepare_index_params()
    build, _ = DENSE_INDEXES[dense_index]
    index.add_index(DENSE_FIELD, index_type=dense_index, metric_type="IP", params=build)
    index.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    index.add_index(BM25_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    for field in _SCALAR_INDEX_FIELDS:
        index.add_index(field, index_type="INVERTED")
    client.create_collection(name, schema=schema, index_params=index)


def create_table(client: MilvusClient, name: str, schema: CollectionSchema) -> None:
    """Create collection ``name`` of scalar rows. Milvus needs one vector field, so a
    2-d ``vec`` (rows write ``PLACEHOLDER_VEC``) with a FLAT index is added to ``schema``."""
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=index)


def load_table(
    client: MilvusClient, name: str, columns: Callable[[], CollectionSchema] | None = None
) -> bool:
    """Load the scalar table ``name``, first creating it with the schema ``columns()`` gives
    when it is missing and ``columns`` is given; whether the table exists."""
    if not client.has_collection(name):
        if columns is None:
            return False
        create_table(client, name, columns())
    client.load_collection(name)
    return True
