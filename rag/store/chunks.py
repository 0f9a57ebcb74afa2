"""Chunk rows: a chunk and its vectors as a row of the chunk collection, and a row as a chunk."""

from __future__ import annotations

from collections.abc import Sequence

from scipy import sparse

from rag.chunking import embedding_text
from rag.embedders.base import Embeddings
from rag.store.schema import (
    DENSE_FIELD,
    LANGUAGE_FIELD,
    LEXICAL_FIELD,
    MAX_BYTES,
    SPARSE_FIELD,
    fit_bytes,
)
from rag.types import Chunk


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


def chunk_rows(
    chunks: Sequence[Chunk], embeddings: Embeddings, *, language: bool = True
) -> list[dict]:
    """The rows of ``chunks`` with their vectors (``embeddings`` row ``i`` is chunk ``i``'s),
    text fields cut to the schema's byte limits and ``LEXICAL_FIELD`` the embedded text;
    with ``language`` (a collection of schema v3 or later), ``LANGUAGE_FIELD`` the chunk's
    language.

    Raises:
        ValueError: ``chunks`` and ``embeddings`` differ in length.
    """
    if len(chunks) != embeddings.dense.shape[0] or len(chunks) != embeddings.sparse.shape[0]:
        raise ValueError("chunks and embeddings must have the same number of rows")
    sparse_rows = sparse_to_milvus(embeddings.sparse)
    rows = [
        {
            "id": c.chunk_id,
            "text": fit_bytes(c.text, MAX_BYTES["text"]),
            LEXICAL_FIELD: fit_bytes(embedding_text(c), MAX_BYTES[LEXICAL_FIELD]),
            "source": fit_bytes(c.source, MAX_BYTES["source"]),
            "title": fit_bytes(c.title, MAX_BYTES["title"]),
            "heading": fit_bytes(c.heading, MAX_BYTES["heading"]),
            "chunk_index": c.chunk_index,
            "page": c.page,
            "file_hash": c.file_hash,
            DENSE_FIELD: embeddings.dense[i],
            SPARSE_FIELD: sparse_rows[i],
        }
        for i, c in enumerate(chunks)
    ]
    if language:
        for row, chunk in zip(rows, chunks, strict=True):
            row[LANGUAGE_FIELD] = chunk.language
    return rows


def row_chunk(row: dict) -> Chunk:
    """The chunk of a row read with ``CHUNK_FIELDS`` (and ``LANGUAGE_FIELD``, if read)."""
    return Chunk(
        chunk_id=row["id"],
        source=row["source"],
        title=row["title"],
        heading=row["heading"],
        chunk_index=int(row["chunk_index"]),
        page=int(row["page"]),
        text=row["text"],
        file_hash=row["file_hash"],
        language=row.get(LANGUAGE_FIELD, ""),
    )
