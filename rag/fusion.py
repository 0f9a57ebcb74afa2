"""Fusion computed here: the convex combination of normalised scores.

Milvus fuses with ``RRFRanker`` or ``WeightedRanker`` (``rag.retriever.make_ranker``).
``WeightedRanker`` normalises each list with ``0.5 + arctan(score)/π``, which is nearly
linear for cosine scores in [-1, 1] but flat for learned-sparse inner products (SPLADE
scores of 10–40 all land at 0.97–0.99), so the sparse list adds almost a constant. The
convex combination normalises each list first, then sums
``w_dense · dense' + w_sparse · sparse'`` (Bruch, Gai & Ingber, 2023, "An Analysis of Fusion
Functions for Hybrid Retrieval", ACM TOIS 42(1), §4). A hit missing from a list gets 0
there, the normalised score of that list's last candidate.

Two normalisations:

- :func:`min_max`, ``(s − min) / (max − min)`` (Bruch et al.): every list's best hit gets
  1.0 however poorly it matches, and a flat list (scores that barely differ) is stretched
  as far as a list with one clear winner.
- :func:`floor_ceiling`, ``(s − min) / ceiling``: the distance above the list's floor as a
  share of a ceiling, the list's best score or, for a sparse list, the score of a document
  identical to the query (``q · q``) when that is higher. A list's say in the fusion then
  follows how far its best hits stand above the rest, the idea of score-based query
  performance predictors (Shtok, Kurland, Carmel, Raiber & Markovits, 2012, "Predicting
  Query Performance by Query-Drift Estimation", ACM TOIS 30(2): the spread of the top
  scores predicts a list's quality), and a sparse list whose best hit matches little of the
  query's own lexical weight (a question answered in other words) counts for little.
  Chosen on seven English BEIR-format sets (docs/EVALUATION.md, "Floor–ceiling
  normalisation").
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


def floor_ceiling(scores: Sequence[float], self_score: float | None = None) -> list[float]:
    """``(s − floor) / ceiling`` for each score of one ranked list.

    Args:
        scores: the list's scores, higher is better (cosine similarities, inner products).
        self_score: the score a document identical to the query would get (``q · q`` for a
            sparse encoder that embeds queries and documents alike: SPLADE, BGE-M3's
            lexical weights), or None.

    Returns:
        Scores in [0, 1]. The floor is the lowest score (0 for a single score: one hit
        stands alone); the ceiling is the best score, or ``self_score`` when higher. All
        0.0 when the ceiling is not positive (a list that matches nothing has no say).
    """
    if not scores:
        return []
    floor = min(scores) if len(scores) > 1 else 0.0
    ceiling = max(max(scores), self_score or 0.0)
    if ceiling <= 0:
        return [0.0] * len(scores)
    return [max(0.0, s - floor) / ceiling for s in scores]


def convex_combination(
    lists: Sequence[Sequence[tuple[str, float]]],
    weights: Sequence[float],
    top_k: int,
    self_scores: Sequence[float | None] | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked ``(id, score)`` lists (higher score is better) into the ``top_k`` ids by
    ``sum_i weights[i] · normalised(list_i)[id]``, best first; ties keep first-seen order.

    Args:
        lists: the ranked lists.
        weights: one non-negative weight per list.
        top_k: how many fused ids to return.
        self_scores: None normalises each list by :func:`min_max`; one entry per list
            normalises by :func:`floor_ceiling` with that list's self score (None: its best
            score is its ceiling).

    Raises:
        ValueError: lists and weights (or self scores) differ in number, a weight is
            negative or all are zero, or ``top_k < 1``.
    """
    if len(lists) != len(weights):
        raise ValueError(f"{len(lists)} lists for {len(weights)} weights")
    if self_scores is not None and len(self_scores) != len(lists):
        raise ValueError(f"{len(lists)} lists for {len(self_scores)} self scores")
    if min(weights, default=0) < 0 or sum(weights) <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    fused: dict[str, float] = {}
    for i, (ranked, weight) in enumerate(zip(lists, weights, strict=True)):
        scores = [score for _, score in ranked]
        normalised = (
            min_max(scores) if self_scores is None else floor_ceiling(scores, self_scores[i])
        )
        for (item, _), score in zip(ranked, normalised, strict=True):
            fused[item] = fused.get(item, 0.0) + weight * score
    order = sorted(fused.items(), key=lambda pair: -pair[1])
    return order[:top_k]
