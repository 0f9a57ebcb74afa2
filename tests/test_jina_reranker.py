"""The Jina Reranker API client against a loopback stub: the documented request, retries,
errors that never show the key."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

# Nothing here may reach the Hugging Face Hub (set before transformers reads it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from jina_stub import JINA_KEY, Reply, jina_reranker, overlap_score
from reranker_support import (
    PASSAGES,
    QUERY,
    assert_reranked,
    make_hits,
    make_settings,
)

from rag.http import retry_after_seconds
from rag.rerankers import (
    RerankError,
    build_reranker,
    passage_text,
)
from rag.rerankers.jina import JinaReranker


def test_jina_sends_the_documented_request_and_reorders(jina_stub):
    hits = make_hits(PASSAGES, title="Index guide")
    reranker = jina_reranker(jina_stub.base_url, [])
    out = reranker.rerank(QUERY, hits, top_k=4)
    (request,) = jina_stub.requests
    assert request["path"] == "/v1/rerank"
    assert request["headers"]["Authorization"] == f"Bearer {JINA_KEY}"
    assert request["headers"]["Content-Type"] == "application/json"
    documents = [passage_text(h) for h in hits]
    assert request["body"] == {
        "model": "jina-reranker-v1-base-en",
        "query": QUERY,
        "documents": documents,
        "top_n": len(documents),
        "return_documents": False,
    }
    scores = [overlap_score(QUERY, d) for d in documents]
    assert_reranked(out, hits, scores, top_k=4)
    assert out[0].chunk_id == "chunk-2"  # the HNSW passage


def test_jina_from_settings(jina_stub):
    reranker = build_reranker(
        make_settings(
            reranker="jina",
            reranker_model="jina-reranker-v2-base-multilingual",
            jina_api_key=JINA_KEY,
            jina_base_url=jina_stub.base_url + "/",
            request_timeout=5.0,
            max_retries=1,
        )
    )
    assert isinstance(reranker, JinaReranker)
    assert (reranker.timeout, reranker.max_retries) == (5.0, 1)
    out = reranker.rerank(QUERY, make_hits(PASSAGES), top_k=1)
    assert out[0].chunk_id == "chunk-2"
    assert jina_stub.requests[0]["body"]["model"] == "jina-reranker-v2-base-multilingual"
    assert jina_stub.requests[0]["path"] == "/v1/rerank"


def test_jina_retries_429_then_succeeds(jina_stub):
    jina_stub.replies = [Reply(429, body={"detail": "rate limited"})]
    waits: list[float] = []
    out = jina_reranker(jina_stub.base_url, waits).rerank(QUERY, make_hits(PASSAGES))
    assert len(jina_stub.requests) == 2 and waits == [0.001]
    assert out[0].chunk_id == "chunk-2"


def test_jina_respects_retry_after_up_to_the_cap(jina_stub):
    jina_stub.replies = [
        Reply(429, {"Retry-After": "1"}, {"detail": "slow down"}),
        Reply(503, {"Retry-After": "120"}, {"detail": "unavailable"}),
    ]
    waits: list[float] = []
    jina_reranker(jina_stub.base_url, waits, max_backoff=5.0).rerank(QUERY, make_hits(PASSAGES))
    assert waits == [1.0, 5.0]
    assert len(jina_stub.requests) == 3


def test_jina_gives_up_after_three_5xx(jina_stub):
    jina_stub.replies = [Reply(500, body={"detail": "boom"}) for _ in range(5)]
    waits: list[float] = []
    with pytest.raises(RerankError, match=r"failed 3 times; last: HTTP 500"):
        jina_reranker(jina_stub.base_url, waits).rerank(QUERY, make_hits(PASSAGES))
    assert len(jina_stub.requests) == 3
    assert waits == [0.001, 0.002]  # exponential backoff, no wait after the last attempt


@pytest.mark.parametrize("status", [401, 403])
def test_jina_bad_key_is_a_clear_error_without_the_key(jina_stub, status):
    jina_stub.replies = [Reply(status, body={"detail": f"Invalid API key {JINA_KEY}"})]
    with pytest.raises(RerankError) as caught:
        jina_reranker(jina_stub.base_url, []).rerank(QUERY, make_hits(PASSAGES))
    message = str(caught.value)
    assert "Jina" in message and f"HTTP {status}" in message
    assert "refused the API key" in message and "RAG_JINA_API_KEY" in message
    assert JINA_KEY not in message and JINA_KEY not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert len(jina_stub.requests) == 1  # not retried


def test_jina_other_4xx_is_not_retried_and_masks_an_echoed_key(jina_stub):
    jina_stub.replies = [Reply(422, body={"detail": f"bad documents for {JINA_KEY}"})]
    with pytest.raises(RerankError, match=r"HTTP 422.*bad documents for \*\*\*") as caught:
        jina_reranker(jina_stub.base_url, []).rerank(QUERY, make_hits(PASSAGES))
    assert JINA_KEY not in str(caught.value)
    assert len(jina_stub.requests) == 1


def test_jina_timeouts_are_retried_then_an_error(jina_stub):
    jina_stub.replies = [Reply(delay=0.6), Reply(delay=0.6)]
    waits: list[float] = []
    reranker = jina_reranker(jina_stub.base_url, waits, timeout=0.15, max_retries=1)
    with pytest.raises(RerankError, match=r"failed 2 times; last: ReadTimeout"):
        reranker.rerank(QUERY, make_hits(PASSAGES))
    assert len(jina_stub.requests) == 2 and waits == [0.001]


def test_jina_connection_refused_is_retried_then_an_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []
    reranker = jina_reranker(f"http://127.0.0.1:{port}/v1", waits)
    with pytest.raises(RerankError, match=r"failed 3 times; last: ConnectError"):
        reranker.rerank(QUERY, make_hits(PASSAGES))
    assert waits == [0.001, 0.002]


@pytest.mark.parametrize(
    "reply,problem",
    [
        (Reply(body={"data": []}), "no 'results'"),
        (Reply(body={"results": [{"index": 0, "relevance_score": 0.5}]}), "5 of 6"),
        (Reply(body={"results": [{"index": 9, "relevance_score": 0.5}]}), "invalid result"),
        (Reply(body={"results": [{"index": 0, "relevance_score": "high"}]}), "invalid result"),
        (Reply(body={"results": [{"index": 0, "relevance_score": 1}] * 2}), "twice"),
        (Reply(raw=b"<html>gateway</html>"), "not JSON"),
    ],
)
def test_jina_malformed_answers_are_errors(jina_stub, reply, problem):
    jina_stub.replies = [reply]
    with pytest.raises(RerankError, match=problem):
        jina_reranker(jina_stub.base_url, []).rerank(QUERY, make_hits(PASSAGES))


def test_jina_needs_a_key():
    for key in (None, "", "  "):
        with pytest.raises(RerankError, match="no API key; set RAG_JINA_API_KEY"):
            JinaReranker(key)


def test_retry_after_parsing():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert retry_after_seconds("nan") is None
