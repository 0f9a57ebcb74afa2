"""Grow a benchmark collection from collections already ingested, to time queries at scale.

Query latency at 10k–1M chunks is measured on real text, not random vectors. Embedding
is the slow part (13–130 chunks/s on two cores, by CPU and chunk size), so the collection
is grown from chunks that were already embedded: every collection in the given dbs that was
built by the same profile (same dense and sparse models, same schema) is copied row by row
(text, lexical text, dense and sparse vectors; Milvus recomputes BM25 from the lexical text)
into one collection. Chunk ids and sources are prefixed with the source collection's name,
so the same document id in two corpora stays two chunks. ``repeat`` copies the sources
again when they hold too few (for timing only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from rag.store import (
    BM25_FIELD,
    CHUNK_FILTER,
    FILES_SUFFIX,
    JOURNAL_SUFFIX,
    MAX_SOURCE_BYTES,
    META_SUFFIX,
    PARAMS_SUFFIX,
    PROFILE_KEY,
    CollectionProfile,
    MilvusStore,
    connect,
    disconnect,
    fit_bytes,
    read_records,
)

_PAGE = 1_000  # rows per query_iterator page and per insert


@dataclass(frozen=True)
class Source:
    """A collection to copy chunks from: its db, name and chunk count (section rows not
    counted; they are copied with their chunks)."""

    uri: str
    collection: str
    chunks: int


def find_sources(uris: list[str], profile: CollectionProfile) -> list[Source]:
    """Every chunk collection in ``uris`` recorded with ``profile``'s models and schema
    (the profile name may differ: eval collections record the same models)."""
    wanted = (profile.dense_model, profile.sparse_model, profile.dim, profile.schema_version)
    found = []
    for uri in uris:
        client = connect(uri)
        try:
            for name in sorted(client.list_collections()):
                if name.endswith((META_SUFFIX, PARAMS_SUFFIX, JOURNAL_SUFFIX, FILES_SUFFIX)):
                    continue
                if client.has_collection(name + META_SUFFIX):
                    client.load_collection(name + META_SUFFIX)
                raw = read_records(client, name).get(PROFILE_KEY)
                if raw is None:
                    continue
                record = json.loads(raw)
                have = tuple(
                    record.get(k) for k in ("dense_model", "sparse_model", "dim", "schema_version")
                )
                if have == wanted and record.get("sparse_params", "") == "":
                    client.load_collection(name)
                    rows = client.query(name, filter=CHUNK_FILTER, output_fields=["count(*)"])
                    found.append(Source(uri, name, int(rows[0]["count(*)"])))
        finally:
            disconnect(client, uri)
    return found


def _rows(source: Source, copy: int = 0) -> Iterator[list[dict]]:
    """The source collection's chunks, a page at a time, ids and sources prefixed with the
    collection's name (and ``copy<N>:`` for the N-th repeat, N > 0)."""
    prefix = f"{source.collection}:" if copy == 0 else f"copy{copy}:{source.collection}:"
    client = connect(source.uri)
    try:
        client.load_collection(source.collection)
        pages = client.query_iterator(
            source.collection, batch_size=_PAGE, filter="", output_fields=["*"]
        )
        try:
            while page := pages.next():
                for row in page:
                    row.pop(BM25_FIELD, None)  # a function output: Milvus recomputes it
                    key = f"{prefix}{row['id']}"
                    row["id"] = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
                    row["source"] = fit_bytes(f"{prefix}{row['source']}", MAX_SOURCE_BYTES)
                yield page
        finally:
            pages.close()
    finally:
        disconnect(client, source.uri)


def _pages(sources: list[Source], repeat: bool) -> Iterator[list[dict]]:
    """Every source's pages in order, once; with ``repeat``, again and again under new
    ids (``copy1:``, ``copy2:`` …) until the caller stops or a pass yields nothing."""
    copy = 0
    while True:
        rows = 0
        for source in sources:
            for page in _rows(source, copy):
                rows += len(page)
                yield page
        if not repeat or rows == 0:
            return
        copy += 1


def grow(
    store: MilvusStore,
    sources: list[Source],
    target: int,
    on_copied: Callable[[int], None] = lambda n: None,
    repeat: bool = False,
) -> int:
    """Copy chunks, with their section rows, from ``sources`` (in order) into ``store``
    until it holds ``target`` chunks; returns the chunks it holds. ``on_copied(n)`` follows
    each page of ``n`` chunks written. Flushes at the end.

    With ``repeat``, sources that hold too few chunks are copied again under new ids and
    sources (``copy1:…``, ``copy2:…``) until the target is reached: such a collection is
    fair for timing, memory and disk (every row is a real chunk's text and vectors), not
    for retrieval quality (each hit has twins).

    Raises:
        ValueError: the sources hold fewer than ``target`` chunks in all (without
            ``repeat``), or none at all.
    """
    available = sum(s.chunks for s in sources)
    have = store.count_chunks()
    needed = target - have
    if needed > 0 and (available == 0 or (available < needed and not repeat)):
        raise ValueError(
            f"the sources hold {available} chunks, {needed} more are needed: ingest "
            "more corpora with this profile (python -m rag.eval DATASET …) first"
        )
    for page in _pages(sources, repeat) if needed > 0 else ():
        page, chunks = _up_to(page, target - have)
        store.client.insert(store.collection, page)
        have += chunks
        on_copied(chunks)
        if have >= target:
            break
    store.flush()
    return have


def _up_to(page: list[dict], chunks: int) -> tuple[list[dict], int]:
    """The first rows of ``page`` that hold at most ``chunks`` chunks, with the section rows
    among them, and how many chunks they hold."""
    taken = 0
    for end, row in enumerate(page):
        if row["chunk_index"] >= 0:
            if taken == chunks:
                return page[:end], taken
            taken += 1
    return page, taken


def describe(sources: list[Source]) -> list[dict]:
    """The sources as plain dicts (for the benchmark's JSON)."""
    return [asdict(s) for s in sources]
