"""Rerankers in the query path: the Searcher, the eval harness and ``rag search --rerank``, on
the tiny CrossEncoder and Jina API fixtures (no weights can be downloaded here) over the
ingested Milvus docs subset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import HIT_JSON_FIELDS
from jina_stub import Reply, jina_reranker
from reranker_support import QUERY, REPO, assert_reranked, expected_order

from rag.rerankers import RerankError, passage_text
from rag.types import Hit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEARCH_QUERY = "How do I create a sparse vector index?"


def test_the_searcher_reranks_its_candidates_and_keeps_every_stage_rank(retriever, cross_encoder):
    from rag.search import Searcher

    result = Searcher(retriever, cross_encoder, rerank_candidates=8).search(SEARCH_QUERY, top_k=3)

    candidates = retriever.search(SEARCH_QUERY, top_k=8)
    assert (result.reranked, result.notes) == (True, [])
    assert_reranked(result.hits, candidates, cross_encoder.score(
        SEARCH_QUERY, [passage_text(h) for h in candidates]), top_k=3)  # fmt: skip
    assert max(h.fused_rank for h in result.hits) <= 8
    assert any(h.dense_rank and h.sparse_rank for h in result.hits)


def test_a_failing_reranker_leaves_the_retrieved_order_with_a_note(retriever, jina_stub):
    from rag.search import Searcher

    jina_stub.replies = [Reply(500, body={"detail": "boom"}) for _ in range(3)]
    searcher = Searcher(retriever, jina_reranker(jina_stub.base_url, []), rerank_candidates=8)
    result = searcher.search(SEARCH_QUERY, top_k=3)

    assert len(jina_stub.requests) == 3 and len(jina_stub.requests[0]["body"]["documents"]) == 8
    expected = retriever.search(SEARCH_QUERY, top_k=3)
    assert [(h.chunk_id, h.rank, h.rerank_score) for h in result.hits] == [
        (h.chunk_id, h.rank, None) for h in expected
    ]
    assert not result.reranked
    (note,) = result.notes
    assert note.startswith("reranking failed, retrieved order kept: ") and "HTTP 500" in note


def test_the_searcher_reranks_its_rerank_depth_and_keeps_the_rest_in_retrieved_order(
    retriever, cross_encoder
):
    from rag.search import Searcher

    searcher = Searcher(retriever, cross_encoder, rerank_candidates=12, rerank_depth=5)
    result = searcher.search(SEARCH_QUERY, top_k=12)

    candidates = retriever.search(SEARCH_QUERY, top_k=12)
    scores = cross_encoder.score(SEARCH_QUERY, [passage_text(h) for h in candidates[:5]])
    assert expected_order(scores) != list(range(5))  # the head is reordered
    assert result.reranked
    assert_reranked(result.hits[:5], candidates[:5], scores)
    assert [(h.chunk_id, h.rank, h.fused_rank, h.rerank_score) for h in result.hits[5:]] == [
        (h.chunk_id, h.rank, h.rank, None) for h in candidates[5:]
    ]
    assert [h.rank for h in result.hits[5:]] == list(range(6, 13))
    # The retrieved hits stay as retrieved, beside the final ones.
    assert [(h.chunk_id, h.rank, h.rerank_score) for h in result.retrieved] == [
        (h.chunk_id, h.rank, None) for h in candidates
    ]
    # A top_k inside the depth keeps the reranked head only.
    short = searcher.search(SEARCH_QUERY, top_k=3)
    assert [h.chunk_id for h in short.hits] == [h.chunk_id for h in result.hits[:3]]
    assert len(short.retrieved) == 12
    with pytest.raises(ValueError, match="rerank_depth must be >= 1"):
        Searcher(retriever, cross_encoder, rerank_depth=0)


def test_a_failing_reranker_without_fallback_raises_in_the_searcher(retriever, jina_stub):
    from rag.search import Searcher

    jina_stub.replies = [Reply(500, body={"detail": "boom"}) for _ in range(3)]
    reranker = jina_reranker(jina_stub.base_url, [])
    searcher = Searcher(retriever, reranker, rerank_candidates=8, fallback=False)
    with pytest.raises(RerankError, match="HTTP 500"):
        searcher.search(SEARCH_QUERY, top_k=3)


def test_eval_scores_the_retrieved_and_the_reranked_ranking_of_one_retrieval(
    retriever, cross_encoder
):
    """``run_mode`` through the Searcher ranks documents as the retriever and the reranker
    called by hand do: the retrieved order, and its first ``rerank_depth`` chunks reranked
    with the rest after them."""
    from rag.eval.metrics import collapse_to_documents
    from rag.eval.runner import EvalMode, run_mode
    from rag.settings import Fusion

    queries = {
        "sparse": SEARCH_QUERY,
        "hnsw": "What does efConstruction control when building an HNSW graph?",
        "pq": "How does product quantization split vectors into subvectors?",
    }
    qrels = {qid: {retriever.search(text, top_k=1)[0].source: 1} for qid, text in queries.items()}
    base, reranked = run_mode(
        retriever, queries, qrels, EvalMode.HYBRID_RRF, top_k=40, reranker=cross_encoder,
        rerank_depth=10,
    )  # fmt: skip

    assert (base.mode, reranked.mode) == ("hybrid-rrf", "hybrid-rrf+rerank")
    for qid, text in queries.items():
        hits = retriever.search(text, top_k=40, fusion=Fusion.RRF, stage_ranks=False)
        head = cross_encoder.rerank(text, hits[:10])
        assert base.rankings[qid] == collapse_to_documents([h.source for h in hits], 100)
        assert reranked.rankings[qid] == collapse_to_documents(
            [h.source for h in (*head, *hits[10:])], 100
        )
    assert base.rankings != reranked.rankings
    assert reranked.scores["recall@100"] == base.scores["recall@100"]
    assert reranked.seconds >= base.seconds > 0


# ----------------------------------------------------------------- CLI
def test_cli_rerank_json(ingested, cross_encoder_dir, reference_cross_encoder):
    uri, collection, _ = ingested
    env = os.environ | {
        "RAG_RERANKER_MODEL": str(cross_encoder_dir),
        "RAG_RERANK_CANDIDATES": "8",
        "RAG_NUM_THREADS": "1",
        "RAG_PRECISION": "float32",  # scores compared with a plain float32 load
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rag",
            "search",
            QUERY,
            "--db",
            uri,
            "--collection",
            collection,
            "--json",
            "--top-k",
            "3",
            "--rerank",
            "cross-encoder",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert set(hits[0]) == HIT_JSON_FIELDS
    assert [h["rank"] for h in hits] == [1, 2, 3]
    scores = [h["rerank_score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(1 <= h["fused_rank"] <= 8 for h in hits)
    assert max(h["fused_rank"] for h in hits) > 3  # candidates beyond top_k were reranked
    stored = ("rank", "score", "chunk_id", "source", "title", "heading", "page", "text")
    texts = [passage_text(Hit(**{key: h[key] for key in stored})) for h in hits]
    expected = reference_cross_encoder.predict([(QUERY, t) for t in texts])
    assert scores == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)
