"""Retrieval metrics over ranked document ids, computed by ``ir-measures`` (trec_eval).

Measures: nDCG@10 with graded gains (trec_eval's linear gains, the qrels score), Recall@10,
Recall@100 and MRR@10, a document being relevant when its qrels score is > 0. Ranked lists
of chunks are collapsed to documents first: a document ranks where its best chunk ranks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import ir_measures
from ir_measures import RR, R, nDCG

from rag.eval.beir import Qrels

# The measures reported, keyed by the names used in the output.
MEASURES: dict[str, ir_measures.Measure] = {
    "ndcg@10": nDCG @ 10,
    "recall@10": R(rel=1) @ 10,
    "recall@100": R(rel=1) @ 100,
    "mrr@10": RR(rel=1) @ 10,
}
METRIC_NAMES: tuple[str, ...] = tuple(MEASURES)


def collapse_to_documents(sources: Iterable[str], limit: int | None = None) -> list[str]:
    """Document ids in the order of their first (best) chunk, duplicates dropped.

    >>> collapse_to_documents(["a", "b", "a", "c"])
    ['a', 'b', 'c']
    """
    seen: dict[str, None] = {}
    for source in sources:
        if source not in seen:
            seen[source] = None
            if limit is not None and len(seen) >= limit:
                break
    return list(seen)


def _run_dict(rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    # trec_eval orders a run by score (ties by doc id), so each list gets strictly
    # decreasing scores by position: the ranking is the list's order, nothing else.
    return {
        qid: {doc: float(len(docs) - i) for i, doc in enumerate(docs)}
        for qid, docs in rankings.items()
    }


def per_query(qrels: Qrels, rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Every measure for every query of ``qrels``: ``{query id: {metric: value}}``.

    ``rankings`` maps a query id to its ranked, distinct document ids. A query of ``qrels``
    that has no ranking, or an empty one, scores 0 on every measure (trec_eval alone would
    skip it, which would inflate the mean).
    """
    scores = {qid: dict.fromkeys(METRIC_NAMES, 0.0) for qid in qrels}
    run = _run_dict({qid: docs for qid, docs in rankings.items() if qid in qrels and docs})
    name_of = {measure: name for name, measure in MEASURES.items()}
    if run:
        for metric in ir_measures.iter_calc(list(MEASURES.values()), qrels, run):
            scores[metric.query_id][name_of[metric.measure]] = float(metric.value)
    return scores


def mean_scores(qrels: Qrels, rankings: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Each measure's mean over every query of ``qrels`` (see :func:`per_query`).

    Raises:
        ValueError: ``qrels`` is empty.
    """
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    scores = per_query(qrels, rankings)
    return {name: sum(s[name] for s in scores.values()) / len(scores) for name in METRIC_NAMES}
