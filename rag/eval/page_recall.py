"""Page-level recall: where a judged document lands among the hits a user sees when the hits
are spread by the page (file) each document belongs to, as the product spreads them.

In a corpus of documentation sections (the Milvus FAQ split), each BEIR document is one
section, and the product's page-level results cap chunks per *file*
(``rag.search.spread_per_source``), not per section. Mapping each document to its file (a
corpus metadata field such as ``path``) and spreading the ranked chunk hits by it measures
what the cap does to the answering section's place: Recall@k is the share of a query's
relevant documents with a chunk among the first k hits, averaged over the judged queries (as
BEIR's ``trec_eval`` Recall@k), MRR@10 the mean reciprocal rank of the first chunk of any
relevant document within the first 10 (0 below). Positions count chunk hits, not
distinct documents: two chunks of one section take two places, as they do on screen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rag.eval.beir import Qrels
from rag.search import spread_per_source
from rag.types import Hit

PAGE_CAPS = (0, 1, 2, 3)  # chunks per page: 0 is the uncapped list
PAGE_DEPTHS = (5, 8, 10)  # the README's top 5, RAG_LLM_PASSAGES, the CLI's top_k
MRR_DEPTH = 10


@dataclass(frozen=True)
class PageRecall:
    """One row: the hits spread at ``cap`` chunks per page.

    Attributes:
        cap: chunks per page before the other hits follow (0: not spread).
        recall: k → Recall@k, the mean over judged queries of the share of their relevant
            documents with a chunk among the first k hits.
        mrr: MRR@10 over the same positions.
        n_queries: judged queries (a query without hits counts as missed).
    """

    cap: int
    recall: dict[int, float]
    mrr: float
    n_queries: int

    @property
    def label(self) -> str:
        """``no cap`` or ``N per page``."""
        return f"{self.cap} per page" if self.cap else "no cap"


def relevant_positions(hits: Sequence[Hit], relevant: set[str]) -> dict[str, int]:
    """Each relevant document with a hit → the 1-based position of its first hit."""
    positions: dict[str, int] = {}
    for position, hit in enumerate(hits, 1):
        if hit.source in relevant:
            positions.setdefault(hit.source, position)
    return positions


def spread_by_page(hits: Sequence[Hit], page_of: Mapping[str, str], cap: int) -> list[Hit]:
    """``hits`` spread by ``spread_per_source`` with each hit grouped by
    ``page_of[source]`` (a source missing from the map is its own page); the hits keep their
    own sources. ``cap`` 0 returns them as they are.

    Raises:
        ValueError: ``cap < 0``.
    """
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    if cap == 0:
        return list(hits)
    return spread_per_source(hits, cap, key=lambda hit: page_of.get(hit.source, hit.source))


def page_recall(
    final_hits: Mapping[str, Sequence[Hit]],
    qrels: Qrels,
    page_of: Mapping[str, str],
    caps: Sequence[int] = PAGE_CAPS,
    depths: Sequence[int] = PAGE_DEPTHS,
) -> list[PageRecall]:
    """Recall@k and MRR@10 of the hits spread by page, one row per cap (a query without a
    relevant document, or without hits, counts as 0).

    Args:
        final_hits: query id → its hits, best first (sources are document ids), deep enough
            that a spread list's first ``max(depths)`` hits are the ones the product would
            show (the product deepens its search while the cap leaves too few).
        qrels: the judgments (a document is relevant when its score is > 0).
        page_of: document id → its page (file).
        caps: chunks per page, 0 for the uncapped list.
        depths: the k of Recall@k.

    Raises:
        ValueError: a cap below 0, or no judged queries.
    """
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    rows = []
    for cap in caps:
        found = dict.fromkeys(depths, 0.0)
        reciprocal = 0.0
        for qid, judged in qrels.items():
            relevant = {doc for doc, score in judged.items() if score > 0}
            spread = spread_by_page(final_hits.get(qid, []), page_of, cap)
            positions = relevant_positions(spread, relevant)
            if not positions:
                continue
            for k in depths:
                found[k] += sum(p <= k for p in positions.values()) / len(relevant)
            if (first := min(positions.values())) <= MRR_DEPTH:
                reciprocal += 1 / first
        n = len(qrels)
        rows.append(PageRecall(cap, {k: found[k] / n for k in depths}, reciprocal / n, n))
    return rows
