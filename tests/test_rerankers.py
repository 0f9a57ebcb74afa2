"""Each reranker on tiny local fixtures (no weights can be downloaded here): the shared
scoring helper, the CrossEncoder, the BGE reranker and BGE-M3's multi-vector scores. Their use
in the query path is in test_rerank_search.py."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

# Nothing here may reach the Hugging Face Hub (set before transformers reads it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from bge_m3_fixture import SEED, build_tiny_bge_m3
from reranker_support import (
    MULTILINGUAL,
    PASSAGES,
    QUERY,
    assert_reranked,
    expected_order,
    make_hits,
    make_settings,
)

from rag.chunking import embedding_text
from rag.embedders.bge_m3 import BGEM3Embedder
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
from rag.types import Chunk

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert set(RERANKERS) == {
        "none", "cross-encoder", "bge-reranker", "jina", "bge-m3-colbert", "maxsim", "auto"
    }  # fmt: skip
    assert build_reranker(make_settings(reranker="none")) is None
    with pytest.raises(UnknownRerankerError, match="choose one of none, cross-encoder"):
        build_reranker(make_settings(reranker="colbertv2"))
    with pytest.raises(RerankError, match="RAG_JINA_API_KEY"):
        build_reranker(make_settings(reranker="jina"))


# ----------------------------------------------------------------- CrossEncoder
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
