"""Query → embed → search (dense, sparse; chunks and, for the convex fusion, section rows) →
fuse (convex, here; or Milvus ``hybrid_search`` with RRF or weighted scores) → ranked hits."""

from __future__ import annotations

import dataclasses
import heapq
import json
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter

import numpy as np
from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

from rag.embedders.base import Embedder, query_encoders
from rag.fusion import convex_combination
from rag.settings import (
    DEFAULT_FUSION,
    DEFAULT_NORMALISATION,
    DEFAULT_SECTION_WEIGHT,
    DEFAULT_SPARSE_QUERY_TERMS,
    DEFAULT_WEIGHTS,
    Fusion,
    Normalisation,
    SearchMode,
    Settings,
)
from rag.store import (
    BM25_FIELD,
    CHUNK_FILTER,
    DENSE_FIELD,
    SECTION_FILTER,
    SPARSE_FIELD,
    MilvusStore,
    sparse_to_milvus,
)
from rag.store.fitted import load_params
from rag.types import Hit

_SIDES = ("dense", "sparse")
_FIELDS = {"dense": DENSE_FIELD, "sparse": SPARSE_FIELD}
# Section rows searched per list, as a multiple of the chunk candidates: sections are fewer
# than chunks, and a deeper section list scores more of the chunk candidates' sections.
SECTION_DEPTH = 2


def source_prefix_filter(prefix: str | None) -> str:
    """A Milvus filter expression for ``source`` starting with ``prefix`` ("" for none).

    Milvus Lite has no escape for the LIKE wildcards ``%`` and ``_``; a prefix holding them
    may match a little more, so :meth:`Retriever.search` re-checks hits with ``startswith``.
    """
    if not prefix:
        return ""
    return f"source like {json.dumps(prefix + '%')}"


def _and(*conditions: str) -> str:
    """The Milvus filter that holds when every non-empty condition holds."""
    kept = [f"({c})" for c in conditions if c]
    return " and ".join(kept)


def make_ranker(fusion: Fusion, rrf_k: int = 60, weights: tuple[float, float] = (0.5, 0.5)):
    """The Milvus ranker for ``fusion``.

    RRF scores a hit ``sum_i 1 / (k + rank_i)`` over the lists it appears in (Cormack,
    Clarke & Büttcher, SIGIR 2009, "Reciprocal Rank Fusion outperforms Condorcet and
    individual Rank Learning Methods"; ``k = 60`` is their constant). ``WeightedRanker``
    sums each list's normalised score times its weight (dense weight first).

    Raises:
        ValueError: ``rrf_k < 1``, weights negative / all zero, or the ``convex`` fusion
            (computed by ``rag.fusion``, not by a Milvus ranker).
    """
    if fusion is Fusion.CONVEX:
        raise ValueError("the convex fusion is computed by rag.fusion, not by a Milvus ranker")
    if fusion is Fusion.RRF:
        if rrf_k < 1:
            raise ValueError("rrf_k must be >= 1")
        return RRFRanker(rrf_k)
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    return WeightedRanker(*weights)


def _hit(rank: int, raw: dict) -> Hit:
    entity = raw["entity"]
    return Hit(
        rank=rank,
        fused_rank=rank,
        score=float(raw["distance"]),
        chunk_id=str(raw["id"]),
        source=entity["source"],
        title=entity["title"],
        heading=entity["heading"],
        page=int(entity["page"]),
        text=entity["text"],
        chunk_index=int(entity["chunk_index"]),
    )


class Retriever:
    """Searches a store with an embedder's query vectors.

    Args:
        store: the open collection (its profile must be the embedder's).
        embedder: encodes queries.
        candidates: hits each ``AnnSearchRequest`` returns before fusion.
        sparse_query_terms: keep only this many of a query's largest lexical weights in its
            sparse search (0: all); see :func:`prune_query_terms`.
        normalisation: how the ``convex`` fusion normalises each list's scores; see
            :meth:`_self_scores`.
        section_weight: share of a chunk's convex score that its section's score gives
            (:func:`by_section`); 0: section rows are not searched.
    """

    def __init__(
        self,
        store: MilvusStore,
        embedder: Embedder,
        candidates: int = 50,
        sparse_query_terms: int = DEFAULT_SPARSE_QUERY_TERMS,
        normalisation: Normalisation = DEFAULT_NORMALISATION,
        section_weight: float = DEFAULT_SECTION_WEIGHT,
    ) -> None:
        if not 0 <= section_weight <= 1:
            raise ValueError(f"section_weight must be in [0, 1], got {section_weight}")
        self.section_weight = section_weight
        self.store = store
        self.embedder = embedder
        self.candidates = candidates
        self.sparse_query_terms = sparse_query_terms
        self.normalisation = normalisation
        self._encoders = query_encoders(embedder)  # None: one pass gives both vectors
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rag-query")

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder | None = None) -> Retriever:
        """Open the settings' collection for ``embedder`` (see ``MilvusStore.open``) and load
        the collection's fitted sparse parameters into it (BM25).

        Without ``embedder``, the embedder is built from the settings, or, when the settings
        name no composition (no profile, dense or sparse set), from the composition and
        models the collection records (``registry.settings_for_record``), and torch then
        runs on ``settings.query_threads`` threads (this process searches).

        Raises:
            StoreError: the collection is missing or unusable; ``ProfileMismatchError`` when
                it was built by another profile; ``SparseParamsError`` when its fitted
                parameters cannot be used yet.
            UnknownProfileError, OSError: the embedder cannot be built.
        """
        from rag.embedders import build_embedder, configure_threads
        from rag.embedders.registry import resolve, settings_for_record
        from rag.store import CollectionProfile, ProfileMismatchError

        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        store = MilvusStore.open(
            settings.milvus_uri,
            settings.collection,
            CollectionProfile.of(embedder) if embedder is not None else None,
            token=token,
            dense_index=settings.dense_index,
            create=False,
        )
        try:
            if embedder is None:
                assert store.profile is not None
                chosen = settings_for_record(settings, store.profile)
                name = resolve(chosen).name
                if name != store.profile.profile:  # refused before any model is loaded
                    raise ProfileMismatchError(
                        f"collection {settings.collection!r} at {settings.milvus_uri} was built "
                        f"with {store.profile.describe()}, but the settings ask for profile "
                        f"{name!r}: search it with its own profile (give no --profile, --dense, "
                        "--sparse, RAG_PROFILE, RAG_DENSE or RAG_SPARSE), or ingest into another "
                        "--collection, or rebuild it with `python -m ingest PATH --reset`."
                    )
                embedder = build_embedder(chosen)
                configure_threads(settings.query_threads)
                store.check_profile(CollectionProfile.of(embedder))
            load_params(store, embedder)
        except Exception:
            store.close()
            raise
        return cls(
            store,
            embedder,
            settings.candidates,
            settings.sparse_query_terms,
            settings.normalisation,
            settings.section_weight,
        )

    def search(self, query: str, *, source_prefix: str | None = None, **options) -> list[Hit]:
        """The ``top_k`` best chunks for ``query``, best first; see :meth:`_search` for the
        options. With ``source_prefix``, only chunks whose source starts with it.

        Raises:
            ValueError: empty query or invalid fusion parameters.
            APIError: an embedding API could not embed the query (``rag.search.Searcher``
                then searches full text).
        """
        hits = self._search(query, source_prefix=source_prefix, **options)
        if source_prefix:
            hits = [h for h in hits if h.source.startswith(source_prefix)]
            for rank, hit in enumerate(hits, 1):
                hit.rank = hit.fused_rank = rank
        return hits

    def _search(
        self,
        query: str,
        *,
        top_k: int = 10,
        mode: SearchMode = SearchMode.HYBRID,
        fusion: Fusion = DEFAULT_FUSION,
        rrf_k: int = 60,
        weights: tuple[float, float] = DEFAULT_WEIGHTS,
        source_prefix: str | None = None,
        stage_ranks: bool = True,
    ) -> list[Hit]:
        """The ``top_k`` best chunks for ``query``, best first.

        ``hybrid`` sends two ``AnnSearchRequest`` (dense and sparse, ``candidates`` hits
        each) to Milvus ``hybrid_search`` fused by RRF or weighted scores, or, with the
        ``convex`` fusion, runs the two searches and fuses them here (``rag.fusion``, no
        extra search for stage ranks); ``dense`` and ``sparse`` search one field; ``bm25``
        runs Milvus's full-text BM25 on the chunk text (its scores are relevance, higher is
        better). With ``stage_ranks``, each hybrid hit also carries its rank and score in
        the dense and sparse lists (two more searches). The two sides are encoded and
        searched on two threads (:meth:`_search_sides`). Every search reads chunks only
        (``CHUNK_FILTER``); the convex fusion also searches the section rows of both sides
        (``SECTION_DEPTH`` times as many) and rescores its chunks by their sections
        (:func:`by_section`, ``section_weight``). A query whose sparse vector is empty (no
        known term) is searched by its dense side alone: the convex fusion then ranks the
        dense chunks rescored by the dense section rows, the Milvus fusions the dense list.

        Raises:
            ValueError: empty query or invalid fusion parameters.
        """
        if not query.strip():
            raise ValueError("the query is empty")
        expr = _and(source_prefix_filter(source_prefix), CHUNK_FILTER)
        if mode is not SearchMode.BM25:
            load_params(self.store, self.embedder)  # follows a refit made by another process
        if mode is SearchMode.BM25:
            hits = [
                _hit(i + 1, r)
                for i, r in enumerate(self.store.search(BM25_FIELD, [query], top_k, expr))
            ]
            for hit in hits:  # milvus-lite 3.2 returns BM25 scores negated, Milvus positive
                hit.score = abs(hit.score)
            return hits
        limit = max(top_k, self.candidates)
        if mode in (SearchMode.DENSE, SearchMode.SPARSE):
            side = mode.value
            raw = self._search_sides(query, (side,), top_k, expr)[side][1]
            return self._annotate([_hit(i + 1, r) for i, r in enumerate(raw or [])], side)

        if fusion is Fusion.CONVEX:
            section_limit = SECTION_DEPTH * limit if self.section_weight else 0
            sections = _and(source_prefix_filter(source_prefix), SECTION_FILTER)
            lists = self._search_sides(query, _SIDES, limit, expr, (section_limit, sections))
            dense_raw, dense_sections = lists["dense"][1] or [], lists["dense"][2] or []
            sparse_data, sparse_raw, sparse_sections = lists["sparse"]
            if sparse_raw is None:  # no known term: the dense side alone
                weights, sparse_raw, sparse_sections = (1.0, 0.0), [], []
            self_scores = self._self_scores(sparse_data or [{}])  # no sparse side: q·q = 0
            if not section_limit:
                hits = _convex(dense_raw, sparse_raw, weights, top_k, self_scores)
            else:
                hits = _convex(dense_raw, sparse_raw, weights, 2 * limit, self_scores)
                section_lists = (dense_sections, sparse_sections)
                weight = self.section_weight
                hits = by_section(hits, section_lists, weights, self_scores, weight)[:top_k]
            _set_stage(hits, dense_raw, "dense")
            _set_stage(hits, sparse_raw, "sparse")
            return hits

        data = self._encode(query, _SIDES)
        if not data["sparse"]:
            raw = self.store.search(DENSE_FIELD, data["dense"], top_k, expr)
            return self._annotate([_hit(i + 1, r) for i, r in enumerate(raw)], "dense")
        requests = [
            AnnSearchRequest(
                data["dense"], DENSE_FIELD, self.store.dense_search_params, limit, expr=expr
            ),
            AnnSearchRequest(data["sparse"], SPARSE_FIELD, {"metric_type": "IP"}, limit, expr=expr),
        ]
        stages = (
            {
                side: self._pool.submit(self.store.search, _FIELDS[side], data[side], limit, expr)
                for side in _SIDES
            }
            if stage_ranks
            else {}
        )
        raw = self.store.hybrid_search(requests, make_ranker(fusion, rrf_k, weights), top_k)
        hits = [_hit(i + 1, r) for i, r in enumerate(raw)]
        for side, stage in stages.items():
            _set_stage(hits, stage.result(), side)
        return hits

    def _encode(self, query: str, sides: tuple[str, ...]) -> dict[str, list]:
        """Each side's query vector as Milvus search data: ``[float32 [dim]]`` for dense,
        ``[{dim: weight}]`` for sparse, ``[]`` for a sparse vector with no known term. An
        embedder with one encoder per side encodes the sides concurrently."""
        if self._encoders is None:
            both = self.embedder.encode_queries([query])
            return {side: self._search_data(side, getattr(both, side)) for side in sides}
        encoder = dict(zip(_SIDES, self._encoders, strict=True))
        if len(sides) == 1:
            vectors = encoder[sides[0]].encode_queries([query])
            return {sides[0]: self._search_data(sides[0], vectors)}
        futures = {side: self._pool.submit(encoder[side].encode_queries, [query]) for side in sides}
        return {side: self._search_data(side, future.result()) for side, future in futures.items()}

    def _search_data(self, side: str, vectors) -> list:
        """Row 0 of a query's ``float32 [1, dim]`` dense or ``csr_array [1, vocab]`` sparse
        vectors as Milvus search data (``[]`` for an empty sparse row), the sparse row pruned
        to ``sparse_query_terms``."""
        if side == "dense":
            return [np.asarray(vectors[0])]
        row = vectors[[0]]
        if not row.nnz:
            return []
        return [prune_query_terms(sparse_to_milvus(row)[0], self.sparse_query_terms)]

    def _search_sides(
        self,
        query: str,
        sides: tuple[str, ...],
        limit: int,
        expr: str,
        sections: tuple[int, str] = (0, ""),
    ) -> dict[str, tuple[list, list[dict] | None, list[dict] | None]]:
        """Each side's search data (see :meth:`_encode`), chunk hits (``limit``, filter
        ``expr``) and section hits (``sections``: how many and their filter; ``None`` when
        that is 0). Hits are ``None`` for a sparse vector with no known term. With one
        encoder per side, each side is encoded and searched on its own thread, so the dense
        search starts as soon as the dense vector is ready while the sparse side runs beside
        it (milvus-lite 2.5 searches on one core per request)."""
        encoded = self._encode(query, sides) if self._encoders is None else {}
        section_limit, section_expr = sections

        def search(side: str) -> tuple[list, list[dict] | None, list[dict] | None]:
            data = encoded[side] if encoded else self._encode(query, (side,))[side]
            if not data:
                return data, None, None
            hits = self.store.search(_FIELDS[side], data, limit, expr)
            if not section_limit:
                return data, hits, None
            return data, hits, self.store.search(_FIELDS[side], data, section_limit, section_expr)

        if len(sides) == 1:
            return {sides[0]: search(sides[0])}
        futures = {side: self._pool.submit(search, side) for side in sides}
        return {side: future.result() for side, future in futures.items()}

    def _self_scores(self, sparse_data: list) -> tuple[None, float] | None:
        """The convex fusion's self scores for one query (:func:`rag.fusion.convex_combination`):
        ``(None, q · q)`` for floor–ceiling normalisation, the dense list's ceiling its best
        cosine and the sparse list's the query's own pruned vector with itself; None for
        min-max. Fitted BM25 weighs query terms by IDF and document terms by saturated
        frequency, so its ``q · q`` is on another scale and its lists are min-max
        normalised (the floor–ceiling choice was measured on learned sparse vectors only)."""
        profile = self.store.profile
        if self.normalisation is Normalisation.MIN_MAX or profile is None or profile.fitted:
            return None
        return None, sum(w * w for w in sparse_data[0].values())

    @staticmethod
    def _annotate(hits: list[Hit], stage: str) -> list[Hit]:
        for hit in hits:
            setattr(hit, f"{stage}_rank", hit.rank)
            setattr(hit, f"{stage}_score", hit.score)
        return hits


def prune_query_terms(vector: dict[int, float], keep: int) -> dict[int, float]:
    """The ``keep`` largest weights of a sparse query vector ``{dimension: weight}`` (all of
    them when ``keep`` is 0 or the vector is no longer).

    A sparse search costs time in proportion to the query's terms (milvus-lite 2.5, 100k
    chunks: 8.0 ms for SPLADE's median 44 terms, 4.2 ms for 16; docs/BENCHMARKS.md), and a
    term of small weight adds little to any score. This is the client-side form of Milvus's
    ``drop_ratio_search`` (Milvus docs, "Sparse Vector"), which keeps a fraction of the
    terms rather than a count, and which milvus-lite 3.x refuses.
    """
    if not keep or len(vector) <= keep:
        return vector
    return dict(heapq.nlargest(keep, vector.items(), key=itemgetter(1)))


def _convex(
    dense_raw: list[dict],
    sparse_raw: list[dict],
    weights: tuple[float, float],
    top_k: int,
    self_scores: tuple[None, float] | None,
) -> list[Hit]:
    """Hits of the two lists fused by :func:`rag.fusion.convex_combination`."""
    rows = {str(r["id"]): r for r in (*sparse_raw, *dense_raw)}
    fused = convex_combination(
        [[(str(r["id"]), float(r["distance"])) for r in raw] for raw in (dense_raw, sparse_raw)],
        weights,
        top_k,
        self_scores,
    )
    return [
        _hit(rank, rows[chunk_id] | {"distance": score})
        for rank, (chunk_id, score) in enumerate(fused, 1)
    ]


def by_section(
    hits: list[Hit],
    section_lists: tuple[list[dict], list[dict]],
    weights: tuple[float, float],
    self_scores: tuple[None, float] | None,
    weight: float,
) -> list[Hit]:
    """``hits`` (chunks fused by :func:`rag.fusion.convex_combination`) rescored by their
    sections, best first: ``(1 − weight) · hit.score + weight · s``, where ``s`` is the
    hit's section's score in the convex fusion of the section rows' dense and sparse lists
    (same ``weights`` and ``self_scores`` as the chunks; 0 for a section not among them).

    A section row embeds a section's first tokens under its title and heading path
    (``rag.chunking``), so a chunk of the section that answers a question ranks above an
    equally similar chunk of a section about something else. The gain is the whole-section
    ("parent document") signal of Milvus's FAQ dev split in English, where scoring whole
    sections beats scoring chunks; the weight keeps the chunk's own match, which BEIR
    abstracts need (docs/EVALUATION.md, "Section rows").

    Each returned hit is ranked again from 1 (``rank``, ``fused_rank``), carries its new
    ``score``, and its section's rank in the section fusion (``section_rank``). A hit's
    section is its ``(source, heading, page)``. Ties keep the chunks' fused order.
    """
    dense, sparse = section_lists
    fused = convex_combination(
        [[(str(r["id"]), float(r["distance"])) for r in raw] for raw in (dense, sparse)],
        weights,
        max(1, len(dense) + len(sparse)),
        self_scores,
    )
    entities = {str(r["id"]): r["entity"] for r in (*dense, *sparse)}
    ranked: dict[tuple[str, str, int], tuple[int, float]] = {}
    for rank, (row_id, score) in enumerate(fused, 1):
        entity = entities[row_id]
        ranked.setdefault((entity["source"], entity["heading"], int(entity["page"])), (rank, score))
    rescored = []
    for hit in hits:
        rank, score = ranked.get((hit.source, hit.heading, hit.page), (None, 0.0))
        rescored.append(((1 - weight) * hit.score + weight * score, rank, hit))
    rescored.sort(key=lambda item: -item[0])
    return [
        dataclasses.replace(hit, rank=i, fused_rank=i, score=score, section_rank=rank)
        for i, (score, rank, hit) in enumerate(rescored, 1)
    ]


def _set_stage(hits: list[Hit], raw: list[dict], stage: str) -> None:
    position = {str(r["id"]): (i + 1, float(r["distance"])) for i, r in enumerate(raw)}
    for hit in hits:
        if hit.chunk_id in position:
            rank, score = position[hit.chunk_id]
            setattr(hit, f"{stage}_rank", rank)
            setattr(hit, f"{stage}_score", score)
