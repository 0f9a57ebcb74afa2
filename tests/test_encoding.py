"""What the packaged encoders compute: the query terms a sparse vector weighs (SPLADE, BM25,
the hybrid models), SPLADE's weights, bfloat16 forward passes and int8 query vectors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FLOATING_VECTOR_PAGES
from embedder_support import clean_settings

from rag.embedders import build_embedder
from rag.embedders.bm25 import BM25Sparse, NotFittedError
from rag.embedders.packaged import resolve_model
from rag.store import CollectionProfile

QUESTIONS = [
    "How do I create a sparse vector index?",
    "What does efConstruction control when building an HNSW graph?",
]


def weighed_words(tokenizer, question: str, vector) -> list[str]:
    """The reference for ``query_terms`` of a learned sparse model: each word of the
    question, tokenized on its own, counts when one of its token ids has a weight."""
    weighted = set(vector.indices[vector.data > 0].tolist())
    words = re.findall(r"\w+", question)
    return [w for w in words if weighted & set(tokenizer(w, add_special_tokens=False).input_ids)]


@pytest.mark.parametrize("question", QUESTIONS)
def test_splade_query_terms_are_the_questions_weighted_words(embedder, question):
    splade = embedder.sparse
    vector = splade.encode_queries([question])
    terms = splade.query_terms(question)

    assert terms == weighed_words(splade.tokenizer, question, vector)
    assert embedder.query_terms(question) == terms  # the pair answers with its sparse side
    # SPLADE adds expansion terms; none of them is a word of the question.
    own = set(splade.tokenizer(question, add_special_tokens=False).input_ids)
    assert set(vector.indices.tolist()) - own
    assert set(terms) <= set(re.findall(r"\w+", question))
    if question == QUESTIONS[0]:
        assert {"create", "sparse", "vector", "index"} <= set(terms) and "a" not in terms
    else:  # words split into word pieces count as whole words
        assert {"efConstruction", "HNSW", "graph"} <= set(terms)


def test_bm25_query_terms_are_the_words_whose_stems_have_an_idf():
    bm25 = BM25Sparse()
    bm25.fit(
        [page.read_text(encoding="utf-8") for page in sorted(FLOATING_VECTOR_PAGES.glob("*.md"))]
    )
    idf = bm25.function.idf
    for question in QUESTIONS:
        words = re.findall(r"\w+", question)
        expected = [w for w in words if any(t in idf and idf[t][0] > 0 for t in bm25.analyzer(w))]
        assert bm25.query_terms(question) == expected
    assert bm25.query_terms(QUESTIONS[0]) == ["How", "do", "I", "create", "vector", "index"]
    assert "sparse" not in idf and not bm25.analyzer("a")  # not in these pages; a stop word
    with pytest.raises(NotFittedError):
        BM25Sparse().query_terms(QUESTIONS[0])


@pytest.fixture(scope="module")
def tiny_bge_m3_dir(tmp_path_factory) -> Path:
    from bge_m3_fixture import build_tiny_bge_m3

    return build_tiny_bge_m3(tmp_path_factory.mktemp("tiny-bge-m3"))


@pytest.mark.parametrize("profile", ["bge-m3", "mgte"])
def test_hybrid_query_terms_are_the_questions_weighted_words(
    profile, tiny_bge_m3_dir, tiny_mgte_dir
):
    """On tiny random-weight models with the real tokenizers (XLM-R for BGE-M3, BERT for
    mGTE): the vectors mean nothing, the words they weigh are read off them all the same."""
    model = {"bge_m3_model": str(tiny_bge_m3_dir), "mgte_model": str(tiny_mgte_dir)}
    hybrid = build_embedder(clean_settings(profile=profile, max_length=128, **model))
    tokenizer = hybrid.model.tokenizer if profile == "bge-m3" else hybrid.function.model.tokenizer
    for question in QUESTIONS:
        vector = hybrid.encode_queries([question]).sparse
        terms = hybrid.query_terms(question)
        assert terms and terms == weighed_words(tokenizer, question, vector)


def test_splade_weights_are_the_max_pooled_logits_of_the_whole_mlm_head(embedder):
    """The per-text vocabulary projection gives SPLADE's definition computed the plain way:
    ``log1p(relu(max over non-padding positions of the MLM logits))``, from a fresh copy of
    the model with its head intact, in float32."""
    from transformers import AutoModelForMaskedLM

    splade = embedder.sparse
    texts = ["Sparse vectors.", "SPLADE expands a passage into weighted vocabulary terms. " * 5]
    saved = splade.autocast
    try:
        splade.autocast = None
        got = splade.encode_documents(texts).toarray()
    finally:
        splade.autocast = saved
    model = AutoModelForMaskedLM.from_pretrained(resolve_model(splade.name)).eval()
    batch = splade.tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # padding
    with torch.inference_mode():
        logits = model(**batch).logits  # [2, L, V]
        logits[batch["attention_mask"] == 0] = float("-inf")
    expected = torch.log1p(torch.relu(logits.amax(dim=1))).numpy()
    assert got.shape == expected.shape == (2, 30522)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert (got > 0).sum(axis=1).min() > 10


def test_bfloat16_forward_passes_keep_the_vectors(embedder):
    """bfloat16 autocast (the ``auto`` precision on a CPU with native bfloat16) changes the
    float32 vectors of the packaged models only in the last digits."""
    from rag.embedders.precision import autocast_dtype, native_bfloat16
    from rag.settings import Precision

    texts = [
        "Milvus Lite keeps dense and sparse vectors in one local file.",
        "SPLADE expands a passage into weighted vocabulary terms; BM25 counts the terms "
        "themselves. " * 6,
    ]
    assert autocast_dtype(Precision.FLOAT32) is None
    assert autocast_dtype(Precision.BFLOAT16) is torch.bfloat16
    assert autocast_dtype(Precision.AUTO) is (torch.bfloat16 if native_bfloat16() else None)
    dense, splade = embedder.dense.documents, embedder.sparse  # documents: the torch model
    saved = dense.autocast, splade.autocast
    try:
        dense.autocast = splade.autocast = None
        exact = embedder.encode_documents(texts)
        dense.autocast = splade.autocast = torch.bfloat16
        fast = embedder.encode_documents(texts)
    finally:
        dense.autocast, splade.autocast = saved
    assert (exact.dense * fast.dense).sum(axis=1).min() > 0.9995
    a, b = exact.sparse.toarray(), fast.sparse.toarray()
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999
    for row_a, row_b in zip(a, b, strict=True):  # the heaviest terms stay the heaviest
        assert len(set(np.argsort(-row_a)[:10]) & set(np.argsort(-row_b)[:10])) >= 8


def test_the_int8_query_setting_keeps_the_collection_profile(settings, embedder):
    """RAG_DENSE_QUERY_INT8 (on by default) changes how queries are encoded, not the
    collection's vectors: a collection built with it off is searched with it on."""
    from rag.embedders.onnx_int8 import Int8QueryDense
    from rag.embedders.sentence_transformer import SentenceTransformerDense

    assert isinstance(embedder.dense, Int8QueryDense)
    on_torch = build_embedder(settings.model_copy(update={"dense_query_int8": False}))
    assert type(on_torch.dense) is SentenceTransformerDense
    assert CollectionProfile.of(on_torch) == CollectionProfile.of(embedder)
    other = build_embedder(settings.model_copy(update={"profile": "multilingual"}))
    assert not isinstance(other.dense, Int8QueryDense)  # only all-MiniLM-L6-v2 has the export


def test_int8_queries_are_encoded_in_bounded_batches_in_input_order(embedder):
    """Thousands of queries at once (the evaluation harness) run in length-sorted batches of
    ``batch_size``, not one padded run that held 24 GB for XQuAD-R's 13,090 questions; each
    row is still its own query's vector."""
    from rag.embedders.onnx_int8 import Int8QueryDense

    int8 = Int8QueryDense(embedder.dense.documents, batch_size=4)
    texts = [f"{'very ' * (i % 5 * 9)}question number {i} about sparse vectors" for i in range(10)]
    sizes: list[int] = []
    run = int8._encode_batch
    int8._encode_batch = lambda batch: sizes.append(len(batch)) or run(batch)
    together = int8.encode_queries(texts)
    assert sizes == [4, 4, 2]
    alone = np.vstack([run([text]) for text in texts])
    similarity = together @ alone.T  # [10, 10] cosines: each row matches its own text best
    assert similarity.diagonal().min() > 0.999
    assert (similarity.argmax(axis=1) == np.arange(10)).all()
