"""Rerankers on tiny local fixtures (no weights can be downloaded here) and a loopback Jina API."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Nothing here may reach the Hugging Face Hub (set before transformers reads it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from bge_m3_fixture import SEED, build_tiny_bge_m3
from cross_encoder_fixture import build_tiny_cross_encoder

from rag.chunking import embedding_text
from rag.embedders.bge_m3 import BGEM3Embedder
from rag.http import retry_after_seconds
from rag.rerankers import (
    RERANKERS,
    Reranker,
    RerankError,
    UnknownRerankerError,
    apply_scores,
    build_reranker,
    passage_text,
)
from rag.rerankers.bge import BGEReranker
from rag.rerankers.colbert import BGEM3ColbertReranker
from rag.rerankers.cross_encoder import CrossEncoderReranker
from rag.rerankers.jina import JinaReranker
from rag.settings import Settings
from rag.types import Chunk, Hit

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
JINA_KEY = "jina_test-key-0123456789abcdefSECRET"


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


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The machine is shared: keep the forward passes on one core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------- the shared helper
def test_apply_scores_sorts_stably_sets_ranks_and_keeps_earlier_ones():
    hits = make_hits(["a", "b", "c", "d"])
    out = apply_scores(hits, [0.1, 0.9, 0.5, 0.9])
    assert [h.chunk_id for h in out] == ["chunk-2", "chunk-4", "chunk-3", "chunk-1"]  # tie: 2, 4
    assert [h.rank for h in out] == [1, 2, 3, 4]
    assert [h.rerank_score for h in out] == pytest.approx([0.9, 0.9, 0.5, 0.1])
    assert [h.fused_rank for h in out] == [2, 4, 3, 1]
    assert [h.dense_rank for h in out] == [12, 14, 13, 11]
    assert [h.sparse_rank for h in out] == [22, 24, None, None]
    assert [h.rank for h in hits] == [1, 2, 3, 4] and hits[0].rerank_score is None  # untouched
    assert [h.chunk_id for h in apply_scores(hits, [0.1, 0.9, 0.5, 0.9], top_k=2)] == [
        "chunk-2",
        "chunk-4",
    ]
    assert len(apply_scores(hits, [1, 2, 3, 4], top_k=10)) == 4


def test_apply_scores_takes_the_old_rank_as_fused_rank_when_unknown():
    hits = [dataclasses.replace(h, fused_rank=None) for h in make_hits(["a", "b"])]
    assert [h.fused_rank for h in apply_scores(hits, [0.0, 1.0])] == [2, 1]


def test_apply_scores_rejects_bad_input():
    hits = make_hits(["a", "b"])
    with pytest.raises(ValueError, match="2 hits"):
        apply_scores(hits, [1.0])
    with pytest.raises(ValueError, match="top_k"):
        apply_scores(hits, [1.0, 2.0], top_k=0)
    with pytest.raises(RerankError, match="NaN"):
        apply_scores(hits, [1.0, float("nan")])


def test_passage_text_is_the_embedded_text():
    hit = make_hits(["Body text."], title="HNSW", heading="Index building > Parameters")[0]
    chunk = Chunk(
        chunk_id=hit.chunk_id,
        source=hit.source,
        title=hit.title,
        heading=hit.heading,
        chunk_index=hit.chunk_index,
        page=hit.page,
        text=hit.text,
        file_hash="0" * 64,
    )
    assert passage_text(hit) == embedding_text(chunk)
    assert passage_text(hit) == "HNSW > Index building > Parameters\n\nBody text."
    assert passage_text(make_hits(["Only text."])[0]) == "Only text."


def test_registry_and_build(settings):
    assert set(RERANKERS) == {"none", "cross-encoder", "bge-reranker", "jina", "bge-m3-colbert"}
    assert settings.reranker == "none" and build_reranker(settings) is None
    with pytest.raises(UnknownRerankerError, match="choose one of none, cross-encoder"):
        build_reranker(make_settings(reranker="colbertv2"))
    with pytest.raises(RerankError, match="RAG_JINA_API_KEY"):
        build_reranker(make_settings(reranker="jina"))


# ----------------------------------------------------------------- CrossEncoder
@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def cross_encoder(cross_encoder_dir: Path) -> CrossEncoderReranker:
    """Built from settings, as the CLI builds it."""
    reranker = build_reranker(
        make_settings(reranker="cross-encoder", reranker_model=str(cross_encoder_dir), batch_size=4)
    )
    assert isinstance(reranker, CrossEncoderReranker)
    assert reranker.model_name == str(cross_encoder_dir)
    return reranker


@pytest.fixture(scope="session")
def reference_cross_encoder(cross_encoder_dir: Path):
    """A second, independent ``CrossEncoder`` load of the fixture directory."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu")


def test_cross_encoder_follows_predict(cross_encoder, reference_cross_encoder):
    hits = make_hits(PASSAGES, title="Index guide", heading="Vector indexes")
    pairs = [(QUERY, passage_text(h)) for h in hits]
    scores = reference_cross_encoder.predict(pairs, batch_size=4)
    assert len(set(scores.tolist())) == len(hits)  # no ties: the order is decided by scores
    out = cross_encoder.rerank(QUERY, hits)
    assert_reranked(out, hits, scores)
    assert [h.rerank_score for h in out] == [float(scores[i]) for i in expected_order(scores)]
    assert [h.chunk_id for h in out] != [h.chunk_id for h in hits]  # the order did change
    assert isinstance(cross_encoder, Reranker) and cross_encoder.name == "cross-encoder"


def test_cross_encoder_agrees_with_rank(cross_encoder, reference_cross_encoder):
    hits = make_hits(PASSAGES)
    ranked = reference_cross_encoder.rank(QUERY, PASSAGES, top_k=3)
    out = cross_encoder.rerank(QUERY, hits, top_k=3)
    assert [h.chunk_id for h in out] == [hits[r["corpus_id"]].chunk_id for r in ranked]
    assert [h.rerank_score for h in out] == pytest.approx([r["score"] for r in ranked], rel=1e-6)


@pytest.mark.parametrize("reranker_name", ["cross-encoder", "bge-reranker"])
def test_bfloat16_reranking_runs_under_autocast_and_keeps_the_scores(
    reranker_name, cross_encoder_dir, bge_reranker_dir
):
    """``RAG_PRECISION=bfloat16`` reaches the reranker's forward passes: the scores move by
    bfloat16 rounding only (within 10% of their spread on these random-weight fixtures; 1e-4
    on a 6-layer MiniLM-shaped one, docs/BENCHMARKS.md), and clearly separated scores keep
    their order."""
    model = str(cross_encoder_dir if reranker_name == "cross-encoder" else bge_reranker_dir)
    hits = make_hits(PASSAGES if reranker_name == "cross-encoder" else MULTILINGUAL)
    scores = {}
    for precision in ("float32", "bfloat16"):
        reranker = build_reranker(
            make_settings(reranker=reranker_name, reranker_model=model, precision=precision)
        )
        assert reranker.autocast == (torch.bfloat16 if precision == "bfloat16" else None)
        scores[precision] = reranker.score(QUERY, [passage_text(h) for h in hits])
    exact, rounded = scores["float32"], scores["bfloat16"]
    assert not np.array_equal(exact, rounded)  # the passes did run in bfloat16
    spread = float(exact.max() - exact.min())
    assert np.max(np.abs(exact - rounded)) < 0.1 * spread
    gaps = np.abs(exact[:, None] - exact[None, :])
    clear = gaps > 0.2 * spread
    assert np.array_equal((exact[:, None] > exact[None, :])[clear],
                          (rounded[:, None] > rounded[None, :])[clear])  # fmt: skip


def test_cross_encoder_truncates_to_top_k(cross_encoder):
    hits = make_hits(PASSAGES)
    full = cross_encoder.rerank(QUERY, hits)
    top = cross_encoder.rerank(QUERY, hits, top_k=2)
    assert [h.chunk_id for h in top] == [h.chunk_id for h in full[:2]]
    assert [h.rank for h in top] == [1, 2]
    assert cross_encoder.rerank(QUERY, [], top_k=2) == []
    with pytest.raises(ValueError, match="empty"):
        cross_encoder.rerank("  ", hits)


def test_cross_encoder_truncates_long_passages(cross_encoder, cross_encoder_dir):
    """A pair far beyond the fixture's 512 positions is truncated, not an indexing error,
    even when the settings allow more tokens than the model."""
    out = cross_encoder.rerank(QUERY, make_hits(["graph " * 3000, PASSAGES[1]]))
    assert all(np.isfinite(h.rerank_score) for h in out)
    pair = [(QUERY, "graph " * 3000)]
    for max_length, tokens in [(8192, 512), (64, 64)]:
        model = CrossEncoderReranker(str(cross_encoder_dir), max_length=max_length).model
        assert model.preprocess(pair)["input_ids"].shape == (1, tokens)


# ----------------------------------------------------------------- BGE reranker
@pytest.fixture(scope="session")
def tiny_bge_m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight ``BAAI/bge-m3``-shaped fixture directory (tests/bge_m3_fixture)."""
    return build_tiny_bge_m3(tmp_path_factory.mktemp("tiny-bge-m3"))


@pytest.fixture(scope="session")
def bge_reranker_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bge_m3_dir: Path) -> Path:
    """Test fixture, not a model: laid out like ``BAAI/bge-reranker-v2-m3`` (an
    ``XLMRobertaForSequenceClassification`` with one label and the real XLM-R tokenizer),
    with the tiny BGE-M3 fixture's shape and seeded random weights (~50 MB)."""
    from transformers import (
        AutoTokenizer,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    directory = tmp_path_factory.mktemp("tiny-bge-reranker")
    config = XLMRobertaConfig.from_pretrained(tiny_bge_m3_dir, num_labels=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        XLMRobertaForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_bge_m3_dir).save_pretrained(directory)
    return directory


def test_bge_reranker_scores_are_the_models_logits(bge_reranker_dir):
    """FlagReranker (its transformers-5 path re-tokenizes decoded ids) must give the logits
    of the plain transformers model on the tokenizer's own (query, passage) encoding."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reranker = build_reranker(
        make_settings(reranker="bge-reranker", reranker_model=str(bge_reranker_dir), batch_size=4)
    )
    assert isinstance(reranker, BGEReranker) and reranker.name == "bge-reranker"
    tokenizer = AutoTokenizer.from_pretrained(bge_reranker_dir)
    model = AutoModelForSequenceClassification.from_pretrained(bge_reranker_dir).eval()
    with torch.no_grad():
        logits = [
            model(**tokenizer(QUERY, text, return_tensors="pt")).logits.item()
            for text in MULTILINGUAL
        ]
    assert len(set(np.round(logits, 4))) == len(logits)
    hits = make_hits(MULTILINGUAL)
    out = reranker.rerank(QUERY, hits)
    assert_reranked(out, hits, logits)
    assert [h.chunk_id for h in reranker.rerank(QUERY, hits, top_k=2)] == [
        h.chunk_id for h in out[:2]
    ]


# ----------------------------------------------------------------- BGE-M3 multi-vector
@pytest.fixture(scope="session")
def bge_m3_embedder(tiny_bge_m3_dir: Path) -> BGEM3Embedder:
    return BGEM3Embedder(str(tiny_bge_m3_dir), device="cpu", batch_size=4, max_length=512)


@pytest.fixture(scope="session")
def colbert(tiny_bge_m3_dir, bge_m3_embedder) -> BGEM3ColbertReranker:
    """Built for the ``bge-m3`` profile: it shares the embedder's loaded model."""
    reranker = build_reranker(
        make_settings(
            profile="bge-m3",
            bge_m3_model=str(tiny_bge_m3_dir),
            reranker="bge-m3-colbert",
            batch_size=4,
        ),
        bge_m3_embedder,
    )
    assert isinstance(reranker, BGEM3ColbertReranker)
    return reranker


def test_colbert_shares_the_embedders_model(colbert, bge_m3_embedder):
    assert colbert.model is bge_m3_embedder.model


def test_colbert_scores_are_flagembeddings_colbert_score(colbert):
    """Each score equals ``BGEM3FlagModel.colbert_score`` of the query's and the passage's
    vectors encoded on their own (no batch padding), and the MaxSim mean written out."""
    model = colbert.model
    only = {"return_dense": False, "return_sparse": False, "return_colbert_vecs": True}
    query_vecs = model.encode_queries([QUERY], **only)["colbert_vecs"][0]
    texts = [*MULTILINGUAL, *PASSAGES[:3]]
    reference, maxsim = [], []
    for text in texts:
        vecs = model.encode_corpus([text], **only)["colbert_vecs"][0]
        reference.append(float(model.colbert_score(query_vecs, vecs)))
        maxsim.append(float((query_vecs @ vecs.T).max(axis=1).mean()))
    np.testing.assert_allclose(reference, maxsim, rtol=1e-5)
    hits = make_hits(texts)
    assert_reranked(colbert.rerank(QUERY, hits), hits, reference)


def test_colbert_ranks_the_query_itself_first(colbert):
    hits = make_hits([*PASSAGES[:3], QUERY, *PASSAGES[3:]])
    out = colbert.rerank(QUERY, hits, top_k=3)
    assert out[0].chunk_id == "chunk-4" and out[0].fused_rank == 4
    assert out[0].rerank_score == pytest.approx(1.0, abs=1e-5)  # normalised vectors
    assert out[1].rerank_score < out[0].rerank_score


def test_colbert_from_pretrained_agrees_with_the_shared_model(colbert, tiny_bge_m3_dir):
    loaded = BGEM3ColbertReranker.from_pretrained(str(tiny_bge_m3_dir), batch_size=4)
    assert loaded.model is not colbert.model
    texts = MULTILINGUAL + PASSAGES
    np.testing.assert_allclose(
        loaded.score(QUERY, texts), colbert.score(QUERY, texts), rtol=1e-5, atol=1e-6
    )


# ----------------------------------------------------------------- Jina API (loopback)
def overlap_score(query: str, document: str) -> float:
    """The stub's relevance: shared lower-cased words over the document's word count + 1."""
    words = document.lower().split()
    return len(set(query.lower().split()) & set(words)) / (1 + len(words))


@dataclasses.dataclass
class Reply:
    """One planned answer of the stub: a status, headers, a JSON body (``None``: the
    documented success answer) or raw bytes, sent after ``delay`` seconds."""

    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: object = None
    raw: bytes | None = None
    delay: float = 0.0


class JinaStub(ThreadingHTTPServer):
    """A loopback server speaking the Jina Reranker API: ``POST /v1/rerank`` with
    ``{"model", "query", "documents", "top_n", "return_documents"}`` answers
    ``{"model", "usage", "results": [{"index", "relevance_score", "document"?}]}``, best
    first, ``top_n`` long. Planned ``replies`` are used first, in order."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), JinaHandler)
        self.replies: list[Reply] = []
        self.requests: list[dict] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"

    @staticmethod
    def answer(request: dict) -> dict:
        scores = [overlap_score(request["query"], d) for d in request["documents"]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        results = [{"index": i, "relevance_score": scores[i]} for i in order]
        if request.get("return_documents", True):
            for result in results:
                result["document"] = {"text": request["documents"][result["index"]]}
        tokens = sum(len(d.split()) for d in request["documents"])
        return {
            "model": request["model"],
            "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
            "results": results[: request.get("top_n") or len(results)],
        }


class JinaHandler(BaseHTTPRequestHandler):
    server: JinaStub

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "headers": dict(self.headers.items()), "body": request}
        )
        reply = self.server.replies.pop(0) if self.server.replies else Reply()
        time.sleep(reply.delay)
        if reply.raw is not None:
            data = reply.raw
        elif reply.body is not None:
            data = json.dumps(reply.body).encode()
        elif self.path != "/v1/rerank":
            reply, data = Reply(status=404), b'{"detail": "Not Found"}'
        else:
            data = json.dumps(JinaStub.answer(request)).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def jina_stub():
    server = JinaStub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def jina_reranker(base_url: str, waits: list[float], **options) -> JinaReranker:
    """A client with tiny waits, recorded in ``waits`` instead of slept."""
    defaults = {"base_url": base_url, "timeout": 2.0, "max_retries": 2, "backoff": 0.001}
    return JinaReranker(JINA_KEY, sleep=waits.append, **(defaults | options))


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


# ----------------------------------------------------------------- the query path
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
    assert set(hits[0]) == {
        "rank",
        "score",
        "chunk_id",
        "source",
        "title",
        "heading",
        "page",
        "text",
        "dense_rank",
        "dense_score",
        "sparse_rank",
        "sparse_score",
        "section_rank",
        "rerank_score",
        "fused_rank",
    }
    assert [h["rank"] for h in hits] == [1, 2, 3]
    scores = [h["rerank_score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(1 <= h["fused_rank"] <= 8 for h in hits)
    assert max(h["fused_rank"] for h in hits) > 3  # candidates beyond top_k were reranked
    texts = [
        passage_text(
            Hit(
                **{
                    k: h[k]
                    for k in (
                        "rank",
                        "score",
                        "chunk_id",
                        "source",
                        "title",
                        "heading",
                        "page",
                        "text",
                    )
                }
            )
        )
        for h in hits
    ]
    expected = reference_cross_encoder.predict([(QUERY, t) for t in texts])
    assert scores == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)
