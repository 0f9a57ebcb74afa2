"""Context recall: the share of judged queries for which the text the LLM would get holds at
least one chunk of a relevant document (or all of its chunks), at a token budget."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rag.context import ChunkReader, Passage, build_passages
from rag.embedders.base import TokenCounter
from rag.eval.beir import Qrels
from rag.types import Hit

HitList = Callable[[Sequence[Hit]], list[Hit]]
"""A query's final hits → the hit list the context is built from: the hits as ranked
(:func:`ranked`), or another grouping of them (``rag.search.spread_per_source`` for
page-level results)."""

PREFIX = "context-recall@"  # the rows' label: context-recall@2000


def ranked(hits: Sequence[Hit]) -> list[Hit]:
    """The hits as they are ranked (the plain top-k)."""
    return list(hits)


@dataclass(frozen=True)
class ContextRecall:
    """One row: context recall of one hit list at one budget.

    Attributes:
        hits: the name of the hit list (``top-k``, ``per-source-2``…).
        budget: tokens of context (the embedder's, as ``RAG_CONTEXT_TOKENS`` counts them).
        plain: the hits alone, in rank order, while they fit the budget.
        expanded: the first ``seeds`` hits with their neighbouring chunks
            (:func:`rag.context.build_passages`, as ``python -m rag answer`` builds them).
        seeds: hits that seed the expanded context (``RAG_LLM_PASSAGES``).
        n_queries: judged queries (the denominator; a query without hits counts as missed).
        plain_whole, expanded_whole: the same, counting a query only when every chunk of a
            relevant document is in the context (``None`` unless chunk counts were given).
    """

    hits: str
    budget: int
    plain: float
    expanded: float
    seeds: int
    n_queries: int
    plain_whole: float | None = None
    expanded_whole: float | None = None

    @property
    def label(self) -> str:
        """``context-recall@BUDGET``."""
        return f"{PREFIX}{self.budget}"


def context_passages(
    hits: Sequence[Hit],
    read: ChunkReader,
    counter: TokenCounter,
    budget: int,
    *,
    expand: bool,
    seeds: int,
) -> list[Passage]:
    """The context of ``hits`` at ``budget`` tokens: all hits while they fit (``expand``
    false), or the first ``seeds`` grown with their neighbours."""
    chosen = hits[:seeds] if expand else hits
    return build_passages(chosen, read, counter, budget, expand=expand)


def chunks_held(passages: Iterable[Passage]) -> dict[str, int]:
    """Source → how many of its chunks the passages hold (passages never overlap)."""
    held: dict[str, int] = {}
    for passage in passages:
        held[passage.source] = held.get(passage.source, 0) + passage.chunks
    return held


def context_recall(
    final_hits: Mapping[str, Sequence[Hit]],
    qrels: Qrels,
    read: ChunkReader,
    counter: TokenCounter,
    budgets: Iterable[int],
    *,
    seeds: int = 5,
    hit_lists: Mapping[str, HitList] | None = None,
    count: Callable[[str], int] | None = None,
) -> list[ContextRecall]:
    """Context recall of every hit list at every budget, plain and expanded.

    A query counts when a document it judges relevant (score > 0; sources are document ids)
    has a chunk in its context.

    Args:
        final_hits: query id → its hits, best first (every judged query).
        qrels: the judgments.
        read: ``MilvusStore.chunks_at`` of the collection the hits come from.
        counter: the embedder's tokenizer.
        budgets: token budgets, each > 0.
        seeds: hits that seed the expanded context.
        hit_lists: name → hit list to build the context from (default ``{"top-k": ranked}``);
            a page-grouped variant is ``lambda hits: spread_per_source(hits, 2)``.
        count: source → its number of stored chunks (``store.count_chunks(source=source)``);
            given, the rows also count queries whose relevant document is whole in the
            context (``plain_whole``, ``expanded_whole``).

    Returns:
        One row per hit list and budget, in that order.

    Raises:
        ValueError: a budget below 1 or ``seeds`` below 1.
    """
    budgets = list(budgets)
    if min(budgets, default=1) < 1 or seeds < 1:
        raise ValueError("budgets and seeds must be >= 1")
    hit_lists = hit_lists or {"top-k": ranked}
    n = max(len(final_hits), 1)
    sizes: dict[str, int] = {}
    rows = []
    for name, make in hit_lists.items():
        lists = {qid: make(hits) for qid, hits in final_hits.items()}
        for budget in budgets:
            found = {False: 0, True: 0}
            whole = {False: 0, True: 0}
            for qid, hits in lists.items():
                relevant = {doc for doc, score in qrels.get(qid, {}).items() if score > 0}
                for expand in (False, True):
                    passages = context_passages(
                        hits, read, counter, budget, expand=expand, seeds=seeds
                    )
                    held = chunks_held(passages)
                    found[expand] += bool(held.keys() & relevant)
                    if count is not None:
                        for doc in held.keys() & relevant:
                            if doc not in sizes:
                                sizes[doc] = count(doc)
                        whole[expand] += any(
                            held[doc] >= sizes[doc] for doc in held.keys() & relevant
                        )
            rows.append(
                ContextRecall(
                    name,
                    budget,
                    found[False] / n,
                    found[True] / n,
                    seeds,
                    len(final_hits),
                    whole[False] / n if count is not None else None,
                    whole[True] / n if count is not None else None,
                )
            )
    return rows
