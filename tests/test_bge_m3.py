"""Tests of BGEM3Embedder's real FlagEmbedding path, on a tiny random-weight fixture directory."""

from __future__ import annotations

import dataclasses
import os
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

# Nothing here may reach the Hugging Face Hub (set before transformers reads it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from bge_m3_fixture import HIDDEN_SIZE, VOCAB_SIZE, build_tiny_bge_m3, tokenizer_json
from scipy import sparse

from rag.chunking import Chunker, chunk_id
from rag.embedders.bge_m3 import BGEM3Embedder, lexical_weights_to_csr
from rag.embedders.tokenizer import HFTokenCounter
from rag.store import (
    DENSE_FIELD,
    SPARSE_FIELD,
    CollectionProfile,
    MilvusStore,
    ProfileMismatchError,
    sparse_to_milvus,
)
from rag.types import Chunk

if TYPE_CHECKING:
    from FlagEmbedding import BGEM3FlagModel

BERT_VOCAB_SIZE = 30_522
# <s> (CLS), <pad>, </s> (EOS), <unk>: the ids FlagEmbedding drops from lexical weights.
SPECIAL_IDS = {0, 1, 2, 3}
TEXTS = [
    "Milvus Lite keeps dense and sparse vectors in one local file.",
    "北京是中华人民共和国的首都，也是全国的政治中心。",
    "Москва — столица России и крупнейший город страны.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Hybrid search fuses lexical weights with dense embeddings by reciprocal rank fusion.",
    "東京は日本の首都です。",
]


@pytest.fixture(scope="session")
def tiny_bge_m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight ``BAAI/bge-m3``-shaped fixture directory."""
    return build_tiny_bge_m3(tmp_path_factory.mktemp("tiny-bge-m3"))


@pytest.fixture(scope="session")
def bge_m3_embedder(tiny_bge_m3_dir: Path) -> BGEM3Embedder:
    """``BGEM3Embedder`` on the fixture directory (CPU, one torch thread)."""
    torch.set_num_threads(1)
    return BGEM3Embedder(str(tiny_bge_m3_dir), device="cpu", batch_size=4, max_length=512)


@pytest.fixture(scope="session")
def direct_flag_model(tiny_bge_m3_dir: Path, bge_m3_embedder: BGEM3Embedder) -> BGEM3FlagModel:
    """A second, independent ``BGEM3FlagModel`` load of the fixture directory."""
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(
        str(tiny_bge_m3_dir),
        use_fp16=False,
        devices="cpu",
        batch_size=bge_m3_embedder.batch_size,
        return_dense=True,
        return_sparse=True,
    )


def _row(matrix: sparse.csr_array, i: int) -> dict[int, float]:
    """Row ``i`` of a csr matrix as ``{column: value}``."""
    start, end = matrix.indptr[i], matrix.indptr[i + 1]
    columns, values = matrix.indices[start:end].tolist(), matrix.data[start:end].tolist()
    return dict(zip(columns, values, strict=True))


# ----------------------------------------------------------------- the fixture itself
def test_fixture_has_the_bge_m3_layout(tiny_bge_m3_dir: Path) -> None:
    names = {path.name for path in tiny_bge_m3_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "sparse_linear.pt",
        "colbert_linear.pt",
    } <= names


def test_flagembedding_loads_the_saved_heads(
    tiny_bge_m3_dir: Path, bge_m3_embedder: BGEM3Embedder, direct_flag_model: BGEM3FlagModel
) -> None:
    """FlagEmbedding re-initialises both heads at random when a file is missing or
    misnamed; two loads of the directory must carry the saved weights and agree."""
    for loaded in (bge_m3_embedder.model.model, direct_flag_model.model):
        for name in ("sparse_linear", "colbert_linear"):
            saved = torch.load(tiny_bge_m3_dir / f"{name}.pt", weights_only=True)
            state = getattr(loaded, name).state_dict()
            assert state.keys() == saved.keys()
            for key, tensor in saved.items():
                assert torch.equal(state[key], tensor), f"{name}.{key} was not loaded"
    first = bge_m3_embedder.model.encode(TEXTS, return_dense=True, return_sparse=True)
    second = direct_flag_model.encode(TEXTS, return_dense=True, return_sparse=True)
    np.testing.assert_allclose(first["dense_vecs"], second["dense_vecs"], rtol=1e-5, atol=1e-6)
    for a, b in zip(first["lexical_weights"], second["lexical_weights"], strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-5)


def test_tokenizer_is_the_packaged_xlmr_vocabulary(bge_m3_embedder: BGEM3Embedder) -> None:
    """transformers 5 rebuilds the XLM-R backend from tokenizer.json's vocabulary; the ids
    must still be those of the packaged tokenizer."""
    from tokenizers import Tokenizer

    packaged = Tokenizer.from_file(str(tokenizer_json()))
    loaded = bge_m3_embedder.model.tokenizer
    assert len(loaded) == packaged.get_vocab_size() == VOCAB_SIZE
    assert (loaded.cls_token_id, loaded.pad_token_id, loaded.eos_token_id) == (0, 1, 2)
    assert (loaded.unk_token_id, loaded.mask_token_id) == (3, VOCAB_SIZE - 1)
    assert loaded.model_max_length == 8192
    for text in TEXTS:
        assert loaded(text)["input_ids"] == packaged.encode(text).ids


# ----------------------------------------------------------------- shapes and dtypes
def test_attributes(tiny_bge_m3_dir: Path, bge_m3_embedder: BGEM3Embedder) -> None:
    assert bge_m3_embedder.profile == "bge-m3"
    assert bge_m3_embedder.dense_name == bge_m3_embedder.sparse_name == str(tiny_bge_m3_dir)
    assert bge_m3_embedder.dim == HIDDEN_SIZE == 32
    assert bge_m3_embedder.vocab_size == VOCAB_SIZE == 250_002
    assert bge_m3_embedder.max_tokens == 512
    assert isinstance(bge_m3_embedder.tokenizer, HFTokenCounter)


@pytest.mark.parametrize("side", ["documents", "queries"])
def test_shapes_and_dtypes(bge_m3_embedder: BGEM3Embedder, side: str) -> None:
    encode = getattr(bge_m3_embedder, f"encode_{side}")
    dense, lexical = encode(TEXTS)
    assert dense.dtype == np.float32
    assert dense.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, atol=1e-5)
    assert isinstance(lexical, sparse.csr_array)
    assert lexical.shape == (len(TEXTS), 250_002)
    assert lexical.dtype == np.float32
    assert (lexical.data > 0).all()
    assert all(lexical.indptr[i + 1] > lexical.indptr[i] for i in range(len(TEXTS)))

    empty_dense, empty_lexical = encode([])
    assert empty_dense.shape == (0, 32) and empty_dense.dtype == np.float32
    assert empty_lexical.shape == (0, 250_002) and empty_lexical.dtype == np.float32


# ----------------------------------------------------------------- sparse conversion
def test_sparse_rows_are_flagembedding_lexical_weights(
    bge_m3_embedder: BGEM3Embedder, direct_flag_model: BGEM3FlagModel
) -> None:
    """The csr row of a text holds exactly the token ids and weights that a direct
    ``BGEM3FlagModel.encode`` call reports in ``lexical_weights``."""
    expected = direct_flag_model.encode(TEXTS, return_dense=False, return_sparse=True)
    rows = bge_m3_embedder.encode_documents(TEXTS).sparse
    for i, weights in enumerate(expected["lexical_weights"]):
        row = _row(rows, i)
        wanted = {int(token): float(w) for token, w in weights.items() if w > 0}
        assert wanted, f"text {i} has no lexical weight"
        assert sorted(row) == sorted(wanted)
        np.testing.assert_allclose(
            [row[token] for token in wanted], list(wanted.values()), rtol=1e-5
        )


def test_special_tokens_never_get_a_weight(bge_m3_embedder: BGEM3Embedder) -> None:
    """CLS, EOS, PAD and UNK carry a positive raw weight out of the sparse head, yet never
    reach the sparse vector."""
    texts = ["A parrot 🦜 and a dove 🕊 sat on the fence.", "Short 🦜."]
    tokenizer = bge_m3_embedder.model.tokenizer
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        raw = bge_m3_embedder.model.model(inputs, return_dense=False, return_sparse=True)
    raw_weights = raw["sparse_vecs"].squeeze(-1)
    mask = inputs["attention_mask"].bool()
    ids = inputs["input_ids"]
    for special in SPECIAL_IDS:
        present = ids == special
        assert present.any(), f"id {special} is missing from the inputs"
        assert (raw_weights[present] > 0).any(), f"id {special} has no raw weight to drop"
    assert (~mask).any(), "the second text was not padded"

    rows = bge_m3_embedder.encode_documents(texts).sparse
    assert not SPECIAL_IDS & set(rows.indices.tolist())
    for i in range(len(texts)):
        real_tokens = set(ids[i][mask[i]].tolist()) - SPECIAL_IDS
        assert set(_row(rows, i)) <= real_tokens


def test_multilingual_text_uses_xlmr_ids(bge_m3_embedder: BGEM3Embedder) -> None:
    """Chinese and Russian text map to ids beyond BERT's 30522-term vocabulary."""
    texts = ["北京是中华人民共和国的首都。", "Москва — столица России."]
    rows = bge_m3_embedder.encode_documents(texts).sparse
    for i, text in enumerate(texts):
        columns = set(_row(rows, i))
        token_ids = set(bge_m3_embedder.model.tokenizer(text)["input_ids"]) - SPECIAL_IDS
        assert columns <= token_ids
        assert max(columns) > BERT_VOCAB_SIZE


def test_lexical_weights_to_csr_rejects_out_of_range_ids() -> None:
    with pytest.raises(ValueError):
        lexical_weights_to_csr([{"10": 0.5}], vocab_size=10)
    with pytest.raises(ValueError):
        lexical_weights_to_csr([{"-1": 0.5}], vocab_size=10)


def test_lexical_weights_to_csr_empty_and_zero_weights() -> None:
    matrix = lexical_weights_to_csr([{}, {"7": 0.0, "3": 0.25}, {"5": 0.0}], vocab_size=10)
    assert isinstance(matrix, sparse.csr_array)
    assert matrix.shape == (3, 10) and matrix.dtype == np.float32
    assert _row(matrix, 0) == {}
    assert _row(matrix, 1) == {3: 0.25}
    assert _row(matrix, 2) == {}
    assert matrix.nnz == 1


# ----------------------------------------------------------------- tokenizer spans
def test_token_spans_slice_to_token_text(bge_m3_embedder: BGEM3Embedder) -> None:
    """Every token with text of its own spans exactly that text (word-initial ``▁`` is the
    space before it, not part of the span)."""
    text = "Москва — столица России; Αθήνα, naïve café, São Paulo. Straße und 北京大学"
    tokenizer = bge_m3_embedder.model.tokenizer
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    spans = bge_m3_embedder.tokenizer.token_spans(text)
    assert len(spans) == len(pieces)
    assert any(token_id > BERT_VOCAB_SIZE for token_id in encoded["input_ids"])
    for piece, (start, end) in zip(pieces, spans, strict=True):
        if piece != "▁":
            assert text[start:end] == piece.removeprefix("▁")
    assert [start for start, _ in spans] == sorted(start for start, _ in spans)


def test_token_spans_do_not_overlap(bge_m3_embedder: BGEM3Embedder) -> None:
    """transformers 5 gives the bare '▁' before CJK text the next character's span; the
    counter clips it, so chunks never repeat or split a character."""
    spans = bge_m3_embedder.tokenizer.token_spans("Hello 北京 und 東京")
    assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))
    chunker = Chunker(bge_m3_embedder.tokenizer, chunk_size=2, overlap=0)
    assert chunker.split_text("Hello 北京") == ["Hello", "北京"]


# ----------------------------------------------------------------- Milvus Lite round trip
def test_milvus_round_trip(tmp_path: Path, bge_m3_embedder: BGEM3Embedder) -> None:
    """Each chunk, searched with the query encoding of its own text, ranks first on the
    sparse field and on the dense field.

    BGE-M3 adds no query instruction, so a text's query and document vectors are equal:
    dense inner product 1 with itself, and the fixture's random encoder keeps other texts
    clearly below (checked: runner-up < 0.99).
    """
    chunks = [
        Chunk(chunk_id("notes.md", i, text), "notes.md", "Notes", "", i, 0, text, "0" * 64)
        for i, text in enumerate(TEXTS)
    ]
    documents = bge_m3_embedder.encode_documents([c.text for c in chunks])
    queries = bge_m3_embedder.encode_queries([c.text for c in chunks])
    np.testing.assert_allclose(queries.dense, documents.dense, atol=1e-6)
    uri = str(tmp_path / "m3.db")
    profile = CollectionProfile.of(bge_m3_embedder)
    store = MilvusStore.open(uri, "m3", profile)
    try:
        assert store.profile == profile
        assert (store.profile.dim, store.profile.vocab_size) == (32, 250_002)
        store.upsert_chunks(chunks, documents)
        assert store.count_chunks() == len(chunks)
        for i, chunk in enumerate(chunks):
            sparse_hits = store.search(SPARSE_FIELD, sparse_to_milvus(queries.sparse[[i]]), 3)
            assert sparse_hits[0]["id"] == chunk.chunk_id
            self_score = float((queries.sparse[[i]] @ documents.sparse[[i]].T).sum())
            assert sparse_hits[0]["distance"] == pytest.approx(self_score, rel=1e-4)
            runner_up = sparse_hits[1]["distance"] if len(sparse_hits) > 1 else 0.0
            assert runner_up < sparse_hits[0]["distance"]

            dense_hits = store.search(DENSE_FIELD, [queries.dense[i].tolist()], 3)
            assert dense_hits[0]["id"] == chunk.chunk_id
            assert dense_hits[0]["entity"]["text"] == chunk.text
            assert dense_hits[0]["distance"] == pytest.approx(1.0, abs=1e-4)
            assert dense_hits[1]["distance"] < 0.99
    finally:
        store.close()

    with pytest.raises(ProfileMismatchError):
        MilvusStore.open(uri, "m3", dataclasses.replace(profile, dim=31))
    reopened = MilvusStore.open(uri, "m3", profile)
    try:
        assert reopened.count_chunks() == len(chunks)
    finally:
        reopened.close()
