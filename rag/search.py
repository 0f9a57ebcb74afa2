"""The query path that the CLI, the UI and the notebook share: retrieve → rerank → hits that
carry every stage's rank, with the notes a user should read and the query terms that matched.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter

from rag.fusion import min_max
from rag.http import APIError
from rag.language import Language, choose_lexical, detect, unread_language_note
from rag.rerankers import Reranker, RerankError, build_reranker, rerank_weight_of
from rag.retriever import Retriever
from rag.settings import SearchMode, Settings
from rag.types import Hit

# With a per-source cap, hits retrieved per hit wanted, and the factor by which the list
# deepens while the cap leaves too few (a page of many matching chunks) and each deeper list
# brings new pages; Milvus's largest topk is 16,384 (Milvus docs, "Limits").
CAP_DEPTH = 4
MAX_DEPTH = 16_384
# Words too common to be worth showing as matches, though a sparse vector may weigh them.
STOP_WORDS = frozenset(
    "a about an and are as at be but by can do does for from had has have how i if in into "
    "is it its me my no not of on or our so such than that the their them then there these "
    "they this to us was we what when where which who why will with you your".split()
)


@dataclass
class SearchResult:
    """The answer of :meth:`Searcher.search` to one query.

    Attributes:
        hits: the ``top_k`` best chunks, best first. Each carries its ``rank`` (final),
            ``score`` (retrieval), ``fused_rank`` (its rank in the retrieved list), in hybrid
            mode its ``dense_rank`` / ``sparse_rank`` and their scores (``None`` outside that
            list's candidates), in dense or sparse mode that list's rank and score, and, when
            ``reranked``, its ``rerank_score``.
        mode: the mode the hits come from: the one asked for, or ``bm25`` when the query could
            not be embedded and full-text matches stand in.
        reranked: whether the reranker ordered the hits (``False`` without a reranker, or
            when it failed and the retrieved order stands).
        notes: why the hits differ from what was asked (full-text fallback, lexical list
            left out, reranker failure), one sentence each, for the user to read.
        retrieved: every retrieved hit in retrieved order, before reranking and before the
            cut to ``top_k`` (unmodified: ``rank`` is the retrieval rank).
        retrieve_seconds, rerank_seconds: wall-clock seconds of the retrieval (with the
            full-text fallback, both searches) and of the reranker call (0 without one).
        language: the query's detected language (``rag.language.detect``).
        lexical: whether a lexical list (sparse vectors or full-text BM25) ranked the hits:
            false in dense mode, and in hybrid mode when the language rule left it out
            (``rag.language.choose_lexical``; ``mode`` is then ``dense``, with a note).
    """

    hits: list[Hit]
    mode: SearchMode
    reranked: bool = False
    notes: list[str] = field(default_factory=list)
    retrieved: list[Hit] = field(default_factory=list)
    retrieve_seconds: float = 0.0
    rerank_seconds: float = 0.0
    language: Language = Language("", 0.0)
    lexical: bool = False


class Searcher:
    """Retrieve, then rerank: the query path behind ``python -m rag search``/``answer``, the
    Streamlit page and the notebook.

    Args:
        retriever: embeds the query, searches and fuses (:class:`rag.retriever.Retriever`).
        reranker: reorders the retrieved hits (``None``: the retrieved order stands).
        rerank_candidates: hits retrieved for the reranker to read
            (``RAG_RERANK_CANDIDATES``); at least ``top_k`` are.
        rerank_depth: the reranker reorders only the first ``rerank_depth`` retrieved hits,
            the rest follow them in retrieved order (``None``: it reorders all of them).
        fallback: with ``False``, an embedding API or reranker failure raises instead of
            falling back to full-text matches or the retrieved order (for measurements,
            which a silent fallback would corrupt).
        per_source: at most this many chunks of one source (file) among the hits while
            the retrieved list holds other sources (``RAG_PER_SOURCE``; ``None`` or 0: no
            cap); see :func:`spread_per_source`.
        rerank_weight: the share of the reranker's score in the final order
            (:func:`mix_scores`; 1: the reranker's order alone; ``None``: the reranker's
            own, ``rag.rerankers.RERANK_WEIGHTS``).

    Example::

        searcher = Searcher.from_settings(Settings())
        result = searcher.search("How do I create a sparse vector index?", top_k=5)
        for hit in result.hits:
            print(hit.rank, hit.source, hit.dense_rank, hit.sparse_rank, hit.rerank_score)
        searcher.close()
    """

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None = None,
        rerank_candidates: int = 30,
        *,
        rerank_depth: int | None = None,
        fallback: bool = True,
        per_source: int | None = None,
        rerank_weight: float | None = None,
    ) -> None:
        if rerank_weight is not None and not 0 <= rerank_weight <= 1:
            raise ValueError(f"rerank_weight must be in [0, 1], got {rerank_weight}")
        if rerank_depth is not None and rerank_depth < 1:
            raise ValueError(f"rerank_depth must be >= 1 or None, got {rerank_depth}")
        if per_source is not None and per_source < 0:
            raise ValueError(f"per_source must be >= 0 or None, got {per_source}")
        self.per_source = per_source or None
        self.retriever = retriever
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.rerank_depth = rerank_depth
        self.fallback = fallback
        self.rerank_weight = rerank_weight_of(reranker, rerank_weight)

    @classmethod
    def from_settings(cls, settings: Settings) -> Searcher:
        """The settings' retriever (``Retriever.from_settings``) and reranker
        (``build_reranker``, ``RAG_RERANKER``, mixed by ``rerank_weight``), models
        loaded, collection open.

        Raises:
            StoreError, UnknownProfileError, OSError: see ``Retriever.from_settings``.
            UnknownRerankerError, RerankError, OSError: see ``build_reranker``; the
                collection is closed again.
        """
        retriever = Retriever.from_settings(settings)
        try:
            reranker = build_reranker(settings, retriever.embedder)
        except Exception:
            retriever.store.close()
            raise
        return cls(
            retriever,
            reranker,
            settings.rerank_candidates,
            per_source=settings.per_source,
            rerank_weight=settings.rerank_weight,
        )

    def search(
        self, query: str, *, top_k: int = 10, mode: SearchMode = SearchMode.HYBRID, **options
    ) -> SearchResult:
        """The ``top_k`` best chunks for ``query``.

        Retrieves ``top_k`` hits, or ``max(top_k, rerank_candidates)`` with a reranker, by
        ``Retriever.search`` in ``mode`` with ``options`` (``fusion``, ``rrf_k``,
        ``weights``, ``source_prefix``, ``stage_ranks``), then lets the reranker order them
        (the first ``rerank_depth`` of them, by its score mixed with the retrieval score when
        ``rerank_weight`` is below 1, the rest following in retrieved order with ranks after
        the reranked ones) and keeps the ``top_k`` best. With ``per_source``, a deeper
        list is retrieved and spread per source before reranking (see :meth:`_retrieve`),
        and the reranked hits are spread again, so the reranker and the final hits see at
        most ``per_source`` chunks of one file while the retrieved list holds other files
        (:func:`spread_per_source`). With ``fallback``, two
        faults leave a usable answer and a note: an embedding API that cannot embed the
        query (after its retries) gives Milvus full-text BM25 matches, which embed nothing;
        a reranker that fails (``RerankError``) leaves the retrieved order. In ``hybrid``
        mode, a query in a language the collection (almost) lacks is searched in ``dense``
        mode, with a note (``rag.language.choose_lexical``); a query in a language the dense
        model was not made for gets a note too (``rag.language.unread_language_note``). A
        search that finds nothing says why in a note.

        Raises:
            ValueError: empty query or invalid fusion parameters.
            StoreError, MilvusException: the collection cannot be searched.
            APIError, RerankError: without ``fallback``, the embedding API or the reranker
                failed.
        """
        depth = max(top_k, self.rerank_candidates) if self.reranker else top_k
        notes = []
        started = time.perf_counter()
        language = detect(query)
        if mode in (SearchMode.HYBRID, SearchMode.DENSE):  # the searches that read the dense model
            embedder = self.retriever.embedder
            unread = unread_language_note(query, language, embedder.dense_name, embedder.languages)
            if unread:
                notes.append(unread)
        if mode is SearchMode.HYBRID:
            choice = choose_lexical(language, self.retriever.store)
            if not choice.lexical:
                mode = SearchMode.DENSE
                notes.append(choice.note)
        try:
            hits = self._retrieve(query, depth, mode, options)
        except APIError as error:  # never raised in bm25 mode: it embeds nothing
            if not self.fallback:
                raise
            notes.append(
                f"the query could not be embedded, so these are full-text matches: {error}"
            )
            mode = SearchMode.BM25
            hits = self._retrieve(query, depth, mode, options)
        if not hits:
            notes.append(self._no_hits(mode, options.get("source_prefix")))
        result = SearchResult(hits[:top_k], mode, False, notes, hits, language=language)
        result.lexical = mode is not SearchMode.DENSE
        result.retrieve_seconds = time.perf_counter() - started
        if self.reranker is not None:
            head, tail = hits, []
            if self.rerank_depth is not None:
                head, tail = hits[: self.rerank_depth], hits[self.rerank_depth :]
            started = time.perf_counter()
            try:
                if self.rerank_weight < 1:
                    ranked = mix_scores(self.reranker.rerank(query, head), self.rerank_weight)
                else:
                    # spread per source below, so the reranker orders every candidate
                    ranked = self.reranker.rerank(query, head, None if self.per_source else top_k)
            except RerankError as error:
                if not self.fallback:
                    raise
                notes.append(f"reranking failed, retrieved order kept: {error}")
            else:
                hits = ranked + _follow(tail, len(ranked))
                if self.per_source:
                    hits = spread_per_source(hits, self.per_source)
                result.hits = hits[:top_k]
                result.reranked = True
            result.rerank_seconds = time.perf_counter() - started
        return result

    def _retrieve(self, query: str, depth: int, mode: SearchMode, options: dict) -> list[Hit]:
        """``depth`` retrieved hits; with ``per_source``, the first ``depth`` of a list
        :data:`CAP_DEPTH` times deeper (at least the retriever's ``candidates``) spread per
        source (:func:`spread_per_source`). The list deepens again while the cap leaves
        fewer than ``depth`` hits, Milvus has more to give, and the last deepening found a
        source the list did not hold: a collection of a few long files stops after one
        deepening and fills the hits with their other chunks."""
        if not self.per_source:
            return self.retriever.search(query, top_k=depth, mode=mode, **options)
        deeper, sources = max(depth * CAP_DEPTH, self.retriever.candidates), 0
        while True:
            hits = self.retriever.search(query, top_k=deeper, mode=mode, **options)
            held = Counter(hit.source for hit in hits)
            capped = sum(min(n, self.per_source) for n in held.values())
            if capped >= depth or len(hits) < deeper or deeper >= MAX_DEPTH or len(held) == sources:
                return spread_per_source(hits, self.per_source)[:depth]
            deeper, sources = min(deeper * CAP_DEPTH, MAX_DEPTH), len(held)

    def _no_hits(self, mode: SearchMode, source_prefix: str | None) -> str:
        """Why a search found nothing: an empty collection, a source prefix that no chunk
        has, or (sparse and bm25 modes, which match words) no word in common."""
        store = self.retriever.store
        if not store.count_chunks():
            return (
                f"no hits: collection {store.collection!r} holds no chunks yet "
                "(python -m ingest PATH adds documents)"
            )
        if source_prefix:
            return f"no hits: no chunk's source starts with {source_prefix!r}"
        return f"no hits: no chunk shares a word with the query ({mode.value} mode matches words)"

    def matched_terms(self, query: str, mode: SearchMode) -> list[str]:
        """The words of ``query`` that its sparse search in ``mode`` matched on, to show:
        the embedder's ``query_terms`` without :data:`STOP_WORDS`, one-character words and
        words holding other than letters and digits, each once whatever its case; ``[]``
        in a mode that searches no sparse vector (``dense``; ``bm25``, whose analyzer runs
        inside Milvus).

        Raises:
            NotFittedError: a BM25 sparse side without parameters.
        """
        if mode not in (SearchMode.HYBRID, SearchMode.SPARSE):
            return []
        shown: dict[str, str] = {}
        for word in self.retriever.embedder.query_terms(query):
            key = word.lower()
            if len(word) > 1 and word.isalnum() and key not in STOP_WORDS:
                shown.setdefault(key, word)
        return list(shown.values())

    def close(self) -> None:
        """Close the collection (the retriever's store)."""
        self.retriever.store.close()


def mix_scores(reranked: list[Hit], weight: float) -> list[Hit]:
    """``reranked`` (hits with ``score`` and ``rerank_score``) ordered by
    ``(1 - weight) * minmax(score) + weight * minmax(rerank_score)``, ranked again from 1,
    with that mix as their ``rerank_score``.

    Min-max scaling maps each list's scores over these hits onto [0, 1] (a list whose scores
    are all equal maps to 1), so the mix is the convex combination of Bruch et al., 2023,
    "An Analysis of Fusion Functions for Hybrid Retrieval" (ACM TOIS), here of the retrieval
    and the reranker scores. Equal mixes keep the retrieved order.

    Raises:
        ValueError: a hit has no ``rerank_score``.
    """
    if not reranked:
        return []
    if any(hit.rerank_score is None for hit in reranked):
        raise ValueError("mix_scores needs reranked hits (a rerank_score on each)")
    retrieval = min_max([hit.score for hit in reranked])
    rerank = min_max([hit.rerank_score for hit in reranked])
    mixed = [(1 - weight) * r + weight * s for r, s in zip(retrieval, rerank, strict=True)]
    order = sorted(range(len(reranked)), key=lambda i: (-mixed[i], reranked[i].fused_rank))
    return [
        dataclasses.replace(reranked[i], rank=position, rerank_score=float(mixed[i]))
        for position, i in enumerate(order, 1)
    ]


def spread_per_source(
    hits: Iterable[Hit], per_source: int, key: Callable[[Hit], str] = attrgetter("source")
) -> list[Hit]:
    """The hits with each source's first ``per_source`` chunks first, in their order, then
    every other hit in its order; ranked again from 1 (``rank``). ``key`` gives a hit's
    group, its source by default (``rag.eval.page_recall`` groups documents by their file).
    Each hit keeps its stage ranks and its rank in the list before (``fused_rank``), so a
    page's later chunks leave room for the next pages, and a list of fewer sources than the
    hits wanted still fills them with the best of the rest (a collection of one long PDF
    gives its best chunks in order; a weak page's second chunk does not pass a strong
    page's second).

    This is field collapsing (one group per source, ``per_source`` hits a group) with the
    collapsed hits after the groups, not dropped. Milvus's grouping search
    (``group_by_field``) is not used: the default convex fusion fuses two lists in this
    process, and Milvus Lite 2.5.1 returns one chunk per group whatever ``group_size``
    asks. Spreading the fused list gives the same pages for every fusion and engine.

    Raises:
        ValueError: ``per_source < 1``.
    """
    if per_source < 1:
        raise ValueError(f"per_source must be >= 1, got {per_source}")
    seen: Counter[str] = Counter()
    first: list[Hit] = []
    rest: list[Hit] = []
    for hit in hits:
        group = key(hit)
        (first if seen[group] < per_source else rest).append(hit)
        seen[group] += 1
    return _follow(first + rest, 0)


def _follow(hits: list[Hit], after: int) -> list[Hit]:
    """Copies of ``hits`` ranked ``after + 1``, ``after + 2``, … in their order, each keeping
    its retrieval rank as ``fused_rank``."""
    return [
        dataclasses.replace(
            hit,
            rank=after + position,
            fused_rank=hit.fused_rank if hit.fused_rank is not None else hit.rank,
        )
        for position, hit in enumerate(hits, 1)
    ]


def term_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """The words a reader sees marked as matches of ``terms``: case-insensitive, a word that
    starts with a term of 4 or more letters (``index`` marks ``indexes``), or that is a
    shorter term; longest terms first. ``None`` when no term is alphanumeric. Terms are
    alphanumeric only, so a match never spans an escape of Markdown or rich markup."""
    terms = sorted({t.lower() for t in terms if t.isalnum()}, key=len, reverse=True)
    if not terms:
        return None
    alternatives = "|".join(re.escape(t) + (r"\w*" if len(t) > 3 else r"\b") for t in terms)
    return re.compile(rf"\b(?:{alternatives})", re.IGNORECASE)
