"""The MaxSim reranker on the real packaged all-MiniLM-L6-v2, and the mix of its score with the
retrieval score in the query path."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from reranker_support import MULTILINGUAL, PASSAGES, QUERY, make_hits, make_settings

from rag.embedders import build_embedder
from rag.embedders.packaged import resolve_model
from rag.rerankers import RERANK_WEIGHTS, build_reranker, passage_text, rerank_weight_of
from rag.rerankers.maxsim import MaxSimReranker
from rag.search import Searcher, mix_scores

SEARCH_QUERY = "How do I create a sparse vector index?"


@pytest.fixture(scope="module")
def maxsim() -> MaxSimReranker:
    """A float32 load of the packaged dense model, as the CLI builds it for another profile."""
    reranker = build_reranker(make_settings(reranker="maxsim"))
    assert isinstance(reranker, MaxSimReranker)
    reranker.batch_size = 4  # the passages below make one full batch and one padded
    return reranker


def reference_maxsim(model, query: str, passages: list[str]) -> list[float]:
    """MaxSim from sentence-transformers' own ``token_embeddings`` output: each text's token
    vectors without its first and last ([CLS], [SEP]), normalised, then the mean over query
    tokens of the best cosine to a passage token."""

    def tokens(text: str) -> torch.Tensor:
        (vectors,) = model.encode([text], output_value="token_embeddings")
        return torch.nn.functional.normalize(vectors[1:-1].float(), dim=-1)

    q = tokens(query)
    return [float((q @ tokens(p).T).max(dim=1).values.mean()) for p in passages]


def test_scores_are_the_mean_best_cosine_of_the_query_tokens(maxsim):
    expected = reference_maxsim(maxsim.encoder.model, QUERY, PASSAGES)
    scores = maxsim.score(QUERY, PASSAGES)  # batches of 4: one full, one padded
    assert scores.dtype == np.float32 and scores.shape == (len(PASSAGES),)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert int(np.argmax(scores)) == 1  # the HNSW passage
    assert all(-1.0 <= s <= 1.0 for s in scores)


def test_each_score_is_its_own_passages_whatever_the_batches(maxsim):
    """Passages run longest first in batches; each score still lands on its passage, and
    neither the input order nor the batch size changes it."""
    assert sorted(PASSAGES, key=len, reverse=True) != PASSAGES  # a real reordering
    scores = maxsim.score(QUERY, PASSAGES)
    reversed_scores = maxsim.score(QUERY, PASSAGES[::-1])
    np.testing.assert_allclose(reversed_scores[::-1], scores, atol=1e-5)
    saved = maxsim.batch_size
    try:
        maxsim.batch_size = 1
        alone = maxsim.score(QUERY, PASSAGES)
    finally:
        maxsim.batch_size = saved
    np.testing.assert_allclose(alone, scores, atol=1e-5)
    assert len(set(np.round(scores, 4))) == len(PASSAGES)  # distinct: a swap would show


def test_the_query_itself_scores_one_and_a_text_of_special_tokens_minus_one(maxsim):
    scores = maxsim.score(QUERY, [QUERY, "", PASSAGES[0]])
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] == -1.0  # "" is [CLS] [SEP] only
    assert -1.0 < scores[2] < scores[0]
    with pytest.raises(ValueError, match="no token to score"):
        maxsim.score("", PASSAGES)


def test_the_reranker_borrows_the_embedders_dense_model(embedder, maxsim):
    torch_dense = embedder.dense.documents  # the default encodes queries on int8 ONNX
    threads = torch.get_num_threads()
    shared = build_reranker(make_settings(reranker="maxsim", num_threads=threads + 1), embedder)
    assert torch.get_num_threads() == threads  # it runs on the threads the process has set
    assert isinstance(shared, MaxSimReranker)
    assert shared.encoder.model is torch_dense.model
    assert shared.encoder.model is not maxsim.encoder.model
    assert shared.encoder.autocast == torch_dense.autocast
    # Another model than the dense one is loaded on its own.
    path = resolve_model(torch_dense.name)  # the packaged directory: the same weights
    assert path != torch_dense.name
    alone = build_reranker(make_settings(reranker="maxsim", reranker_model=path), embedder)
    assert alone.encoder.model is not torch_dense.model


def test_rerank_weight_is_the_setting_else_the_rerankers_own(maxsim):
    jina = build_reranker(make_settings(reranker="jina", jina_api_key="not-sent"))
    assert RERANK_WEIGHTS["maxsim"] == 0.5
    assert rerank_weight_of(maxsim, make_settings().rerank_weight) == 0.5
    assert rerank_weight_of(jina) == 1.0
    assert rerank_weight_of(None) == 1.0
    assert rerank_weight_of(maxsim, make_settings(rerank_weight=0.8).rerank_weight) == 0.8
    with pytest.raises(ValueError, match="less than or equal to 1"):
        make_settings(rerank_weight=1.5)


def test_auto_is_maxsim_on_a_sentence_transformers_dense_model(embedder):
    assert make_settings().reranker == "auto"
    auto = build_reranker(make_settings(), embedder)
    assert isinstance(auto, MaxSimReranker)
    assert auto.encoder.model is embedder.dense.documents.model
    assert build_reranker(make_settings()) is None  # no embedder to lend a model
    assert isinstance(build_reranker(make_settings(reranker="maxsim")), MaxSimReranker)


@pytest.fixture(scope="module")
def multilingual():
    return build_embedder(make_settings(profile="multilingual"))


def test_multilingual_e5_lends_its_token_vectors(multilingual):
    """With the multilingual profile, auto is maxsim on multilingual-e5-small's own last hidden
    states: the text's tokens count, not <s>, </s>, padding or the query: / passage: prefix."""
    reranker = build_reranker(make_settings(profile="multilingual"), multilingual)  # auto
    assert isinstance(reranker, MaxSimReranker) and reranker.encoder is multilingual.dense
    other = build_reranker(make_settings(profile="multilingual", reranker="maxsim"), multilingual)
    assert other.encoder is multilingual.dense
    e5 = multilingual.dense
    texts = ["北京是中华人民共和国的首都。", "Sparse vectors weigh words."]
    vectors, keep = e5.token_vectors(texts, query=False)
    own = e5.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert keep.sum(dim=1).tolist() == [len(ids) for ids in own]  # no <s>, </s>, prefix
    assert vectors.shape[:2] == keep.shape and vectors.shape[2] == 384
    assert torch.linalg.vector_norm(vectors[keep], dim=-1).sub(1).abs().max() < 1e-4
    # A Chinese question about Beijing: the Chinese passage about Beijing comes first.
    scores = reranker.score("中国的首都是哪座城市？", MULTILINGUAL)
    assert int(np.argmax(scores)) == 1
    assert reranker.score(MULTILINGUAL[2], [MULTILINGUAL[2]])[0] < 1.0  # query: vs passage:
    assert all(-1.0 <= s <= 1.0 for s in scores)


# ----------------------------------------------------------------- the mix
def reranked_hits(retrieval: list[float], rerank: list[float]):
    hits = [
        dataclasses.replace(hit, score=s, rerank_score=r)
        for hit, s, r in zip(make_hits(PASSAGES[: len(retrieval)]), retrieval, rerank, strict=True)
    ]
    return sorted(hits, key=lambda h: -h.rerank_score)  # as a reranker returns them


def test_mix_scores_is_the_convex_mix_of_min_max_scaled_scores():
    hits = reranked_hits([0.9, 0.5, 0.1, 0.3], [0.2, 0.6, 1.0, 0.4])
    # min-max: retrieval [1, .5, 0, .25]; rerank [0, .5, 1, .25]
    mixed = mix_scores(hits, 0.25)  # the equal mixes of chunk-3 and chunk-4 keep their order
    expected = {"chunk-1": 0.75, "chunk-2": 0.5, "chunk-3": 0.25, "chunk-4": 0.25}
    assert [h.chunk_id for h in mixed] == ["chunk-1", "chunk-2", "chunk-3", "chunk-4"]
    assert [h.rank for h in mixed] == [1, 2, 3, 4]
    for hit in mixed:
        assert hit.rerank_score == pytest.approx(expected[hit.chunk_id])
    # The equal mixes of chunk-3 and chunk-4 keep the retrieved order.
    assert [h.chunk_id for h in mix_scores(hits, 1.0)] == [
        "chunk-3",
        "chunk-2",
        "chunk-4",
        "chunk-1",
    ]
    assert [h.chunk_id for h in mix_scores(hits, 0.0)] == [
        "chunk-1",
        "chunk-2",
        "chunk-4",
        "chunk-3",
    ]
    assert [h.fused_rank for h in mixed] == [1, 2, 3, 4] and mix_scores([], 0.5) == []
    with pytest.raises(ValueError, match="needs reranked hits"):
        mix_scores(make_hits(PASSAGES[:2]), 0.5)


def test_the_searcher_mixes_the_maxsim_score_with_the_fused_score(retriever, embedder):
    reranker = build_reranker(make_settings(reranker="maxsim"), embedder)
    searcher = Searcher(retriever, reranker, rerank_candidates=12, rerank_weight=0.5)
    result = searcher.search(SEARCH_QUERY, top_k=5)

    candidates = retriever.search(SEARCH_QUERY, top_k=12)
    maxsim_scores = reranker.score(SEARCH_QUERY, [passage_text(h) for h in candidates])
    fused = np.array([h.score for h in candidates])

    def scaled(v):
        return (v - v.min()) / (v.max() - v.min())

    mixed = 0.5 * scaled(fused) + 0.5 * scaled(maxsim_scores)
    order = sorted(range(12), key=lambda i: (-mixed[i], i))[:5]
    assert result.reranked
    assert [h.chunk_id for h in result.hits] == [candidates[i].chunk_id for i in order]
    for hit, i in zip(result.hits, order, strict=True):
        assert hit.rerank_score == pytest.approx(mixed[i], abs=1e-4)
        assert (hit.fused_rank, hit.score) == (i + 1, candidates[i].score)
    # Neither list alone gives this order.
    assert order != [0, 1, 2, 3, 4]
    assert order != sorted(range(12), key=lambda i: -maxsim_scores[i])[:5]
    with pytest.raises(ValueError, match="rerank_weight must be in"):
        Searcher(retriever, reranker, rerank_weight=1.5)
    # Without a weight, the Searcher takes the reranker's own.
    assert Searcher(retriever, reranker).rerank_weight == 0.5
