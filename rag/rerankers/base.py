"""The reranker interface, its error, and the helper that reorders hits by their scores."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from rag.chunking import context_line
from rag.types import Hit


class RerankError(RuntimeError):
    """A reranker gave no usable scores (a service refused or kept failing, or a bad answer)."""


@runtime_checkable
class Reranker(Protocol):
    """Reorders retrieved hits by a finer relevance score of (query, passage).

    Attributes:
        name: the reranker's registry name (``rag.rerankers.RERANKERS``).
    """

    name: str

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """The ``top_k`` best of ``hits`` (all when ``None``), best first; see
        :func:`apply_scores` for the fields of the returned hits."""
        ...


def passage_text(hit: Hit) -> str:
    """The text a reranker reads for a hit: the same text the embedder read
    (``rag.chunking.embedding_text``: title and heading path, a blank line, the chunk)."""
    context = context_line(hit.title, hit.heading)
    return f"{context}\n\n{hit.text}" if context else hit.text


def check_top_k(top_k: int | None) -> None:
    """Raises ``ValueError`` unless ``top_k`` is ``None`` or at least 1."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")


def apply_scores(
    hits: Sequence[Hit], scores: Sequence[float] | np.ndarray, top_k: int | None = None
) -> list[Hit]:
    """Copies of ``hits`` sorted by ``scores`` (one per hit, higher is better), cut to ``top_k``.

    Each copy has ``rerank_score`` = its score, ``rank`` = its new 1-based position, and keeps
    ``score``, ``dense_rank``, ``sparse_rank`` and ``fused_rank`` (set to the hit's old
    ``rank`` when it was ``None``). The sort is stable: equal scores keep the retrieved order.
    The input hits are not modified.

    Raises:
        ValueError: ``len(scores) != len(hits)`` or ``top_k < 1``.
        RerankError: a score is NaN.
    """
    check_top_k(top_k)
    values = [float(s) for s in scores]
    if len(values) != len(hits):
        raise ValueError(f"{len(values)} scores for {len(hits)} hits")
    if any(math.isnan(v) for v in values):
        raise RerankError("the reranker returned a NaN score")
    order = sorted(range(len(hits)), key=lambda i: -values[i])[:top_k]
    return [
        dataclasses.replace(
            hits[i],
            rank=position,
            rerank_score=values[i],
            fused_rank=hits[i].fused_rank if hits[i].fused_rank is not None else hits[i].rank,
        )
        for position, i in enumerate(order, 1)
    ]


class ScoringReranker(ABC):
    """A reranker that scores every (query, passage) pair; subclasses implement :meth:`score`.

    Attributes:
        name: the registry name.
    """

    name: str

    @abstractmethod
    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """Relevance of each passage to ``query``: ``float32 [len(passages)]``, higher is
        better (a non-empty list)."""

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """The ``top_k`` best of ``hits`` (all when ``None``) by :meth:`score` of
        :func:`passage_text`, best first (see :func:`apply_scores`).

        Raises:
            ValueError: the query is empty or ``top_k < 1``.
            RerankError: the scores could not be computed.
        """
        check_top_k(top_k)
        if not query.strip():
            raise ValueError("the query is empty")
        if not hits:
            return []
        return apply_scores(hits, self.score(query, [passage_text(h) for h in hits]), top_k)
