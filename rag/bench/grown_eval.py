"""Retrieval quality of a BEIR set's judged queries inside a grown benchmark collection.

``rag.bench grow`` copies eval collections into one large collection and prefixes each
chunk's source with the collection it came from (``<collection>:<doc id>``, and
``copy<N>:<collection>:<doc id>`` for the N-th repeat). Searching such a collection with a
set's judged queries puts the set's chunks among every other chunk; the hits of other
corpora are dropped after retrieval, the rest collapse to the set's document ids, and
``rag.eval.metrics`` scores them (nDCG@10, Recall@10, Recall@100, MRR@10). With exact dense
search (FLAT) and enough depth, dense scores equal those of the set's own collection; two
collections grown from the same sources that differ only in their dense index (FLAT,
IVF_FLAT) thus measure what the approximate index costs in nDCG@10.
"""

from __future__ import annotations

import re

from rag.eval.beir import BeirDataset, Qrels
from rag.eval.metrics import collapse_to_documents, mean_scores
from rag.retriever import Retriever
from rag.settings import SearchMode

DEPTH = 300  # chunks retrieved per query: other corpora's chunks and repeats take slots
DOC_DEPTH = 100  # documents kept per query (Recall@100), as in rag.eval


def set_prefix(dataset: BeirDataset) -> str:
    """The start of the names ``rag.eval`` gives the set's collections (``eval_<dataset>_``,
    e.g. ``eval_beir_scifact_`` for ``beir/scifact``; ``rag.eval.runner.collection_name``)."""
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", dataset.name).strip("_")
    return "eval_" + (slug + "_")[:60]  # the readable part is cut at 60 characters there


def document_id(source: str, prefix: str) -> str | None:
    """The set's document id of a grown chunk's ``source``, or None when the chunk comes
    from a collection whose name does not start with ``prefix``.

    >>> document_id("copy1:eval_beir_scifact_minilm_splade_0a1b:4983", "eval_beir_scifact_")
    '4983'
    >>> document_id("docs:userGuide/hnsw.md", "eval_beir_scifact_") is None
    True
    """
    parts = source.split(":")
    for i, part in enumerate(parts[:-1]):
        if part.startswith(prefix):
            return ":".join(parts[i + 1 :])  # document ids may hold colons (DBpedia's do)
    return None


def score_in_collection(
    retriever: Retriever,
    queries: dict[str, str],
    qrels: Qrels,
    mode: SearchMode,
    prefix: str,
    depth: int = DEPTH,
    **options,
) -> dict[str, float]:
    """Search every query in ``mode`` (``options``: the fusion options of
    ``Retriever.search``, as the product passes them from its settings), keep the hits from
    the collections named ``prefix…``, and score their documents (top 100).

    Returns:
        ``{"ndcg@10", "recall@10", "recall@100", "mrr@10"}``: means over every query of
        ``qrels`` (``rag.eval.metrics.mean_scores``).

    Raises:
        ValueError: no judged queries.
        APIError: an embedding API could not embed a query.
    """
    rankings: dict[str, list[str]] = {}
    for qid, text in queries.items():
        hits = (
            retriever.search(text, top_k=depth, mode=mode, stage_ranks=False, **options)
            if text.strip()
            else []
        )
        ids = (document_id(hit.source, prefix) for hit in hits)
        rankings[qid] = collapse_to_documents((i for i in ids if i is not None), DOC_DEPTH)
    return mean_scores(qrels, rankings)
