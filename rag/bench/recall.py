"""Recall@k of a collection's dense index against exact search, on the stored vectors.

The exact top k is an inner product (the collection's metric) over every stored dense
vector, in numpy; the index's top k is the product's dense search with the collection's own
search parameters. Recall@k counts an index hit as found when its score reaches the exact
k-th score (less 1e-5), so rows that hold the same vector under other ids (a collection grown
with ``rag.bench grow --repeat``) count as the same neighbour, as in ANN-Benchmarks' recall
with distance ties (Aumüller et al. 2020, "ANN-Benchmarks", Inf. Syst. 87).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.store import CHUNK_FILTER, DENSE_FIELD, MilvusStore
from rag.store.schema import STRONG

_PAGE = 10_000  # rows per query_iterator page
_TIE = 1e-5  # score tolerance: float32 inner products of the same vector differ by less


@dataclass(frozen=True)
class RecallResult:
    """Recall@k of one collection's dense index.

    Attributes:
        k: the cut-off.
        queries: query vectors measured.
        rows: dense vectors the exact search read.
        recall: mean over the queries of (index hits at or above the exact k-th score) / k.
    """

    k: int
    queries: int
    rows: int
    recall: float


def stored_vectors(store: MilvusStore) -> np.ndarray:
    """Every chunk's dense vector (section rows left out): ``float32 [chunks, dim]``,
    read a page of 10,000 rows at a time into one array allocated up front (1.5 GB at 1M
    rows × 384, held once).

    Raises:
        ValueError: the collection gained rows while it was read.
    """
    assert store.profile is not None  # set when the store is opened
    vectors = np.empty((store.count_chunks(), store.profile.dim), np.float32)
    filled = 0
    iterator = store.client.query_iterator(
        store.collection,
        batch_size=_PAGE,
        filter=CHUNK_FILTER,
        output_fields=[DENSE_FIELD],
        **STRONG,
    )
    try:
        while batch := iterator.next():
            if filled + len(batch) > vectors.shape[0]:
                raise ValueError("the collection gained rows while it was read: measure it idle")
            vectors[filled : filled + len(batch)] = [row[DENSE_FIELD] for row in batch]
            filled += len(batch)
    finally:
        iterator.close()
    return vectors[:filled]


def exact_kth_scores(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The exact k-th best inner product of each query: ``float32 [n_queries]``.

    Raises:
        ValueError: fewer than ``k`` vectors.
    """
    if vectors.shape[0] < k:
        raise ValueError(f"the collection holds {vectors.shape[0]} vectors, fewer than k={k}")
    best = np.full((queries.shape[0], 0), -np.inf, np.float32)
    for start in range(0, vectors.shape[0], 100_000):
        scores = queries @ vectors[start : start + 100_000].T
        best = np.concatenate([best, scores], axis=1)
        best = -np.partition(-best, k - 1, axis=1)[:, :k]
    return np.sort(best, axis=1)[:, 0]


def twin_kth_scores(exact: MilvusStore, queries: np.ndarray, k: int) -> np.ndarray:
    """The k-th best inner product of each query from a FLAT (exact) collection that holds
    the same vectors: ``float32 [n_queries]``. Reading every vector through Milvus Lite 2.5's
    query iterator takes hours at 1M rows (each page scans the segment); a FLAT twin answers
    in one search per query.

    Raises:
        ValueError: ``exact`` is not FLAT, or holds fewer than ``k`` vectors.
    """
    built = exact.built_dense_index()
    if built != "FLAT":
        raise ValueError(f"{exact.collection} has a {built} dense index; exact search needs FLAT")
    kth = []
    for query in queries:
        hits = exact.search(DENSE_FIELD, [query], k, CHUNK_FILTER)
        if len(hits) < k:
            raise ValueError(f"{exact.collection} holds fewer than k={k} vectors")
        kth.append(hits[-1]["distance"])
    return np.asarray(kth, dtype=np.float32)


def dense_recall(
    store: MilvusStore, queries: np.ndarray, k: int = 10, exact: MilvusStore | None = None
) -> RecallResult:
    """Recall@k of ``store``'s dense index for ``queries`` (``float32 [n, dim]``, the same
    vectors the product would search with), against numpy over every stored vector, or
    against ``exact``, a FLAT collection of the same vectors (:func:`twin_kth_scores`).

    Raises:
        ValueError: the collection holds fewer than ``k`` vectors, or gained rows while it
            was read; ``exact`` is not FLAT or holds another number of rows.
    """
    if exact is None:
        rows = (vectors := stored_vectors(store)).shape[0]
        kth = exact_kth_scores(vectors, queries, k)
    else:
        rows = store.count_chunks()
        if exact.count_chunks() != rows:
            raise ValueError(f"{exact.collection} and {store.collection} hold different rows")
        kth = twin_kth_scores(exact, queries, k)
    found = []
    for query, threshold in zip(queries, kth, strict=True):
        hits: Sequence[dict] = store.search(DENSE_FIELD, [query], k, CHUNK_FILTER)
        found.append(sum(hit["distance"] >= threshold - _TIE for hit in hits) / k)
    return RecallResult(k, len(queries), rows, float(np.mean(found)))
