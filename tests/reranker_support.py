"""Shared by the reranker tests: a query, passages, retrieved hits in rank order, and the
check that a reranked list keeps every earlier stage rank."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.settings import Settings
from rag.types import Hit

REPO = Path(__file__).resolve().parents[1]
QUERY = "How does HNSW build its proximity graph?"
PASSAGES = [
    "IVF_FLAT clusters vectors into buckets and scans the nearest buckets.",
    "HNSW builds a layered proximity graph; efConstruction bounds the candidate list.",
    "Sparse inverted indexes map each term to the vectors that contain it.",
    "DiskANN keeps a Vamana graph on SSD for billion-scale search.",
    "Product quantization splits each vector into subvectors and encodes each one.",
    "BM25 scores documents by term frequency and inverse document frequency.",
]
MULTILINGUAL = [
    "Milvus Lite keeps dense and sparse vectors in one local file.",
    "北京是中华人民共和国的首都，也是全国的政治中心。",
    "Москва — столица России и крупнейший город страны.",
    "HNSW builds a layered proximity graph over the vectors.",
]


def make_hits(texts: list[str], *, title: str = "", heading: str = "") -> list[Hit]:
    """Retrieved hits in rank order, with distinct stage ranks to check they are kept."""
    return [
        Hit(
            rank=i,
            score=1.0 / (60 + i),
            chunk_id=f"chunk-{i}",
            source=f"docs/page{i}.md",
            title=title,
            heading=heading,
            page=0,
            text=text,
            chunk_index=i - 1,
            dense_rank=i + 10,
            sparse_rank=None if i % 2 else i + 20,
            fused_rank=i,
        )
        for i, text in enumerate(texts, 1)
    ]


def make_settings(**values) -> Settings:
    """Settings with ``values``, isolated from any `.env` of the developer; float32 forward
    passes unless ``precision`` is given, so scores can be compared with a plain load."""
    return Settings(_env_file=None, **({"num_threads": 1, "precision": "float32"} | values))


def expected_order(scores) -> list[int]:
    """Positions sorted by score, best first, ties in the given order."""
    return sorted(range(len(scores)), key=lambda i: -float(scores[i]))


def assert_reranked(out: list[Hit], hits: list[Hit], scores, top_k: int | None = None) -> None:
    """``out`` is ``hits`` ordered by ``scores`` and cut to ``top_k``, earlier ranks kept."""
    order = expected_order(scores)[:top_k]
    assert [h.chunk_id for h in out] == [hits[i].chunk_id for i in order]
    assert [h.rank for h in out] == list(range(1, len(order) + 1))
    for hit, i in zip(out, order, strict=True):
        assert hit.rerank_score == pytest.approx(float(scores[i]), rel=1e-5, abs=1e-6)
        original = hits[i]
        assert (hit.fused_rank, hit.dense_rank, hit.sparse_rank, hit.score) == (
            original.fused_rank,
            original.dense_rank,
            original.sparse_rank,
            original.score,
        )
