"""Fusion computed here: the convex combination of min-max normalised scores.

Milvus fuses with ``RRFRanker`` or ``WeightedRanker`` (``rag.retriever.make_ranker``).
``WeightedRanker`` normalises each list with ``0.5 + arctan(score)/π``, which is nearly
linear for cosine scores in [-1, 1] but flat for learned-sparse inner products (SPLADE
scores of 10–40 all land at 0.97–0.99), so the sparse list adds almost a constant. The
convex combination normalises each list by its own minimum and maximum first, then sums
``w_dense · dense' + w_sparse · sparse'`` (Bruch, Gai & Ingber, 2023, "An Analysis of Fusion
Functions for Hybrid Retrieval", ACM TOIS 42(1), §4: convex combination with min-max
normalisation outperforms RRF in- and out-of-domain). A hit missing from a list gets 0
there, the normalised score of that list's last candidate.

Min-max normalisation gives every list's best hit 1.0, however poorly it matches: a sparse
list whose best hit shares little of the query's lexical weight (a question answered in
other words) pulls its unrelated hits into the top 10 as strongly as a list of exact
matches. :func:`sparse_confidence` scales the sparse weight for each query by how much of
its own lexical weight the best hit reaches (a per-query weight in the spirit of Hsu &
Tzeng, 2025, "DAT: Dynamic Alpha Tuning for Hybrid Retrieval in Retrieval-Augmented
Generation", arXiv:2503.23013, which sets it from the top hits' quality; here from scores
alone). The exponent 2 was chosen on seven English BEIR-format sets (docs/EVALUATION.md).
"""

from __future__ import annotations

from collections.abc import Sequence


def min_max(scores: Sequence[float]) -> list[float]:
    """``(s − min) / (max − min)`` for each score; all 1.0 when the scores are equal."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def sparse_confidence(top_score: float, self_score: float, power: float) -> float:
    """``min(1, top_score / self_score) ** power``: the confidence in one query's sparse list.

    Args:
        top_score: the sparse list's best score (inner product of lexical weights).
        self_score: the score of a document identical to the query, ``q · q`` for a
            sparse encoder that embeds queries and documents alike (SPLADE, BGE-M3's
            lexical weights); the ratio is the share of the query's own lexical weight
            that its best hit matches.
        power: the exponent; 0 gives 1.0 (no scaling).

    Returns:
        A factor in [0, 1] for the sparse list's fusion weight; 0.0 when ``self_score`` or
        ``top_score`` is not positive.

    Raises:
        ValueError: ``power < 0``.
    """
    if power < 0:
        raise ValueError("power must be >= 0")
    if power == 0:
        return 1.0
    if self_score <= 0 or top_score <= 0:
        return 0.0
    return min(1.0, top_score / self_score) ** power


def confident_weights(
    weights: tuple[float, float], top_score: float, self_score: float, power: float
) -> tuple[float, float]:
    """``(w_dense, w_sparse · sparse_confidence(top_score, self_score, power))``: one query's
    convex fusion weights; the weights as given when the scaling would make them all zero.

    Raises:
        ValueError: ``power < 0``.
    """
    scaled = (weights[0], weights[1] * sparse_confidence(top_score, self_score, power))
    return scaled if sum(scaled) > 0 else weights


def convex_combination(
    lists: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float], top_k: int
) -> list[tuple[str, float]]:
    """Fuse ranked ``(id, score)`` lists (higher score is better) into the ``top_k`` ids by
    ``sum_i weights[i] · min_max(list_i)[id]``, best first; ties keep first-seen order.

    Raises:
        ValueError: lists and weights differ in number, a weight is negative or all are
            zero, or ``top_k < 1``.
    """
    if len(lists) != len(weights):
        raise ValueError(f"{len(lists)} lists for {len(weights)} weights")
    if min(weights, default=0) < 0 or sum(weights) <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    fused: dict[str, float] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        normalised = min_max([score for _, score in ranked])
        for (item, _), score in zip(ranked, normalised, strict=True):
            fused[item] = fused.get(item, 0.0) + weight * score
    order = sorted(fused.items(), key=lambda pair: -pair[1])
    return order[:top_k]
