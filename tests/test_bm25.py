"""BM25 as a sparse embedding function: Robertson's formula, fit / save / load, the
parameters recorded beside a collection, and the refit policy as the corpus drifts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import FLOATING_VECTOR_PAGES
from embedder_support import clean_settings, default_bm25, ingest, top_pages

from ingest.pipeline import Status
from rag.embedders.bm25 import BM25Sparse, EnglishAnalyzer, NotFittedError
from rag.retriever import Retriever
from rag.settings import Fusion, Normalisation, SearchMode
from rag.store import CollectionProfile, MilvusStore, ProfileMismatchError
from rag.store.fitted import (
    FIT_STATE_KEY,
    SparseParamsError,
    load_params,
    load_params_text,
    params_text,
    read_state,
)


# ----------------------------------------------------------------- BM25
def test_analyzer_needs_no_download(monkeypatch):
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError("nltk.download was called")

    monkeypatch.setattr(nltk, "download", refuse)
    analyzer = EnglishAnalyzer()
    assert analyzer("The Running DOGS ran, über-fast! It's 2024_v2") == [
        "run",
        "dog",
        "ran",
        "über",
        "fast",
        "s",
        "2024_v2",
    ]
    assert BM25Sparse().function.analyzer.__class__ is EnglishAnalyzer


CORPUS = [
    "Milvus stores dense vectors and sparse vectors.",
    "An HNSW graph links each vector to its neighbours.",
    "Sparse inverted index posting lists hold term weights.",
    "Quantization shrinks vectors: product quantization splits them.",
]


def test_bm25_scores_are_robertsons_formula():
    bm25 = BM25Sparse()
    bm25.fit(CORPUS)
    query = "sparse posting lists quantization"
    scores = (bm25.encode_queries([query]) @ bm25.encode_documents(CORPUS).T).toarray()[0]

    analyze = bm25.function.analyzer
    documents = [analyze(text) for text in CORPUS]
    n_docs, avgdl = len(documents), sum(map(len, documents)) / len(documents)
    idf = {}
    for term in {t for d in documents for t in d}:
        n_t = sum(term in d for d in documents)
        idf[term] = math.log((n_docs - n_t + 0.5) / (n_t + 0.5))
    mean_idf = sum(idf.values()) / len(idf)
    idf = {t: v if v >= 0 else 0.25 * mean_idf for t, v in idf.items()}

    def expected(document: list[str]) -> float:
        total = 0.0
        for term in analyze(query):
            tf = document.count(term)
            if tf and term in idf:
                norm = 1.5 * (1 - 0.75 + 0.75 * len(document) / avgdl)
                total += idf[term] * tf * 2.5 / (tf + norm)
        return total

    np.testing.assert_allclose(scores, [expected(d) for d in documents], rtol=1e-5)
    assert scores.argmax() == 2


def test_bm25_fit_save_load_round_trip(tmp_path):
    fitted = BM25Sparse()
    fitted.fit(CORPUS)
    path = tmp_path / "bm25_params.json"
    fitted.save(str(path))
    assert {"version", "corpus_size", "avgdl", "idf_word", "idf_value", "k1", "b"} <= set(
        json.loads(path.read_text())
    )
    loaded = BM25Sparse()
    loaded.load(str(path))
    assert loaded.fingerprint == fitted.fingerprint and len(fitted.fingerprint) == 16
    assert loaded.vocab_size == fitted.vocab_size
    for encode in ("encode_documents", "encode_queries"):
        a, b = getattr(fitted, encode)(CORPUS), getattr(loaded, encode)(CORPUS)
        assert a.dtype == np.float32 and a.shape == (4, fitted.vocab_size)
        np.testing.assert_array_equal(a.toarray(), b.toarray())
    other = BM25Sparse()
    other.fit(CORPUS[:3])
    assert other.fingerprint != fitted.fingerprint


def test_unfitted_bm25_refuses_unless_deferred():
    bm25 = BM25Sparse()
    with pytest.raises(NotFittedError):
        bm25.encode_queries(["anything"])
    with pytest.raises(NotFittedError):
        bm25.encode_documents(["anything"])
    with pytest.raises(ValueError, match="at least one text"):
        bm25.fit([])
    bm25.defer()
    empty = bm25.encode_documents(["a", "b"])
    assert empty.shape == (2, 0) and empty.nnz == 0
    with pytest.raises(NotFittedError):
        bm25.encode_queries(["still no parameters"])


def test_changed_bm25_settings_make_loaded_params_stale(tmp_path):
    fitted = BM25Sparse()
    fitted.fit(CORPUS)
    fitted.save(str(tmp_path / "p.json"))
    other_k1 = BM25Sparse(k1=1.2)
    other_k1.load(str(tmp_path / "p.json"))
    assert "k1" in other_k1.stale() and other_k1.function.k1 == 1.5
    other_k1.fit(CORPUS)
    assert other_k1.stale() is None and other_k1.function.k1 == 1.2
    assert other_k1.fingerprint != fitted.fingerprint


# ----------------------------------------------------------------- BM25 beside a collection
@pytest.fixture(scope="module")
def bm25_db(tmp_path_factory, embedder):
    """A Lite db holding three real pages ingested with ``default+bm25``; yields
    ``(uri, fit report, stored chunk count)``."""
    uri = str(tmp_path_factory.mktemp("bm25") / "milvus.db")
    pages = [
        FLOATING_VECTOR_PAGES / "flat.md",
        FLOATING_VECTOR_PAGES / "ivf-flat.md",
        FLOATING_VECTOR_PAGES / "ivf-sq8.md",
    ]
    bm25_embedder = default_bm25(embedder)
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(bm25_embedder))
    _, refitted = ingest(store, bm25_embedder, pages)
    count = store.count_chunks()
    store.close()
    return uri, refitted, count


def test_first_ingest_fits_bm25_and_records_it_beside_the_collection(bm25_db, embedder):
    uri, refitted, count = bm25_db
    assert refitted.reason == "first fit" and refitted.chunks == count > 20
    store = MilvusStore.open(uri, "docs")
    try:
        assert read_state(store).fitted_chunks == count
        profile = store.profile
        assert (profile.profile, profile.sparse_model, profile.vocab_size) == (
            "default+bm25",
            "bm25",
            refitted.vocab_size,
        )
        assert profile.sparse_params == refitted.fingerprint
        assert store.client.has_collection("docs__sparse_params")
        query_side = default_bm25(embedder)
        load_params(store, query_side)
        assert query_side.sparse.fingerprint == refitted.fingerprint
        assert store.read_params(refitted.fingerprint) == params_text(query_side.sparse)
    finally:
        store.close()


def test_queries_use_the_collections_params(bm25_db, embedder):
    uri, refitted, _ = bm25_db
    retriever = Retriever.from_settings(clean_settings(milvus_uri=uri), default_bm25(embedder))
    try:
        assert retriever.embedder.sparse.fingerprint == refitted.fingerprint
        question = "How does IVF_SQ8 scalar quantization compress vectors?"
        assert top_pages(retriever.search(question, top_k=3, mode=SearchMode.SPARSE))[0] == (
            "ivf-sq8.md"
        )
        assert "flat.md" in top_pages(
            retriever.search("brute-force exact FLAT index", top_k=3, mode=SearchMode.SPARSE)
        )
        assert len(retriever.search(question, top_k=5)) == 5  # hybrid: MiniLM + BM25
    finally:
        retriever.store.close()


def test_fitted_bm25_lists_are_min_max_normalised(bm25_db, embedder):
    """BM25's query weights (IDF) and document weights (saturated term frequency) are on
    other scales, so q·q says nothing of a perfect match: floor–ceiling normalisation falls
    back to min-max."""
    uri, _, _ = bm25_db
    retriever = Retriever.from_settings(clean_settings(milvus_uri=uri), default_bm25(embedder))
    try:
        question = "How does IVF_SQ8 scalar quantization compress vectors?"
        options = {"top_k": 10, "fusion": Fusion.CONVEX, "weights": (0.5, 0.5)}
        assert retriever.normalisation is Normalisation.FLOOR_CEILING
        default = [(h.chunk_id, h.score) for h in retriever.search(question, **options)]
        retriever.normalisation = Normalisation.MIN_MAX
        assert [(h.chunk_id, h.score) for h in retriever.search(question, **options)] == default
    finally:
        retriever.store.close()


def test_a_query_side_with_other_params_is_refused(bm25_db, embedder):
    uri, _, _ = bm25_db
    other = default_bm25(embedder)
    other.sparse.fit(CORPUS)
    with pytest.raises(ProfileMismatchError, match="--refit-bm25") as error:
        MilvusStore.open(uri, "docs", CollectionProfile.of(other))
    assert other.sparse.fingerprint in str(error.value)


def test_changing_the_profile_of_a_collection_is_refused_with_the_way_out(bm25_db, embedder):
    uri, _, _ = bm25_db
    with pytest.raises(ProfileMismatchError) as error:
        MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
    message = " ".join(str(error.value).split())
    assert "default+bm25" in message and "minilm-splade" in message
    assert "--reset" in message and "--collection" in message and "--dense" in message
    # Search names another profile: refused before its models (absent here) would load.
    with pytest.raises(ProfileMismatchError, match="ask for profile 'bge-m3'.*--reset"):
        Retriever.from_settings(clean_settings(milvus_uri=uri, profile="bge-m3"))


def test_refit_policy_follows_corpus_drift(tmp_path, small_docs, embedder):
    bm25_embedder = default_bm25(embedder)
    store = MilvusStore.open(
        str(tmp_path / "drift.db"), "docs", CollectionProfile.of(bm25_embedder)
    )
    try:
        _, first = ingest(store, bm25_embedder, [small_docs / "flat.md"])
        assert first.reason == "first fit"
        vocab = bm25_embedder.sparse.vocab_size
        assert not bm25_embedder.sparse.encode_queries(["nprobe"]).nnz  # not in flat.md

        # A new file is encoded with the recorded params; under the drift limit: no refit.
        report, refitted = ingest(store, bm25_embedder, small_docs.iterdir(), drift=100.0)
        assert refitted is None and report.count(Status.ADDED) == 1
        assert read_state(store).changed_chunks == report.chunks_written
        assert bm25_embedder.sparse.vocab_size == vocab

        # The same run's changes over 20% of the fitted chunks: the next ingest refits.
        report, refitted = ingest(store, bm25_embedder, small_docs.iterdir())
        assert report.chunks_written == 0 and "chunks written or deleted" in refitted.reason
        assert refitted.chunks == store.count_chunks() and bm25_embedder.sparse.vocab_size > vocab
        assert read_state(store).changed_chunks == 0
        retriever = Retriever(store, bm25_embedder)
        hits = retriever.search("nprobe", top_k=1, mode=SearchMode.SPARSE)
        assert top_pages(hits) == ["ivf-flat.md"]

        # Asked for: refit whatever the drift; the same corpus gives the same params.
        _, forced = ingest(store, bm25_embedder, small_docs.iterdir(), refit=True)
        assert forced.reason == "asked with --refit-bm25"
        assert forced.fingerprint == refitted.fingerprint
    finally:
        store.close()


def test_an_interrupted_refit_blocks_queries_until_the_next_ingest(tmp_path, small_docs, embedder):
    bm25_embedder = default_bm25(embedder)
    uri = str(tmp_path / "interrupted.db")
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(bm25_embedder))
    try:
        _, first = ingest(store, bm25_embedder, small_docs.iterdir())
        state = json.dumps({"fitted_chunks": 1, "changed_chunks": 0, "refitting": "0" * 16})
        store.write_records({FIT_STATE_KEY: state})
        with pytest.raises(SparseParamsError, match="refit is running or was interrupted"):
            Retriever(store, default_bm25(embedder)).search("nprobe")
        _, finished = ingest(store, default_bm25(embedder), small_docs.iterdir())
        assert finished.reason == "finishing an interrupted refit"
        assert finished.fingerprint == first.fingerprint and not read_state(store).refitting
        assert Retriever(store, default_bm25(embedder)).search("nprobe", top_k=1)
    finally:
        store.close()


def test_queries_follow_a_refit_made_elsewhere(tmp_path, small_docs, embedder):
    uri = str(tmp_path / "follow.db")
    writer_embedder = default_bm25(embedder)
    writer = MilvusStore.open(uri, "docs", CollectionProfile.of(writer_embedder))
    try:
        ingest(writer, writer_embedder, [small_docs / "flat.md"])
        reader = Retriever(MilvusStore.open(uri, "docs"), default_bm25(embedder))
        assert reader.search("nprobe", top_k=3, mode=SearchMode.SPARSE) == []  # unknown term
        # hybrid: the dense side alone, its chunks rescored by their dense section rows
        hybrid = reader.search("nprobe", top_k=3)
        assert hybrid and all(h.dense_rank and h.sparse_rank is None for h in hybrid)
        assert all(h.section_rank is not None for h in hybrid)
        _, refitted = ingest(writer, writer_embedder, small_docs.iterdir(), refit=True)
        hits = reader.search("nprobe", top_k=3, mode=SearchMode.SPARSE)
        assert reader.embedder.sparse.fingerprint == refitted.fingerprint
        assert top_pages(hits)[0] == "ivf-flat.md"
        reader.store.close()
    finally:
        writer.close()


def test_lost_params_or_changed_settings_lead_to_a_refit(tmp_path, small_docs, embedder):
    uri = str(tmp_path / "lost.db")
    bm25_embedder = default_bm25(embedder)
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(bm25_embedder))
    try:
        ingest(store, bm25_embedder, small_docs.iterdir())
        store.client.drop_collection(store.params_collection)
        with pytest.raises(SparseParamsError, match="missing.*--refit-bm25"):
            load_params(store, default_bm25(embedder))
        _, refitted = ingest(store, default_bm25(embedder), small_docs.iterdir())
        assert refitted.reason == "stored parameters unusable"
        _, refitted = ingest(store, default_bm25(embedder, k1=1.2), small_docs.iterdir())
        assert refitted.reason.startswith("BM25 settings changed")
        assert json.loads(params_text(store_params(store)))["k1"] == 1.2
    finally:
        store.close()


def store_params(store: MilvusStore) -> BM25Sparse:
    """The BM25 parameters the collection records."""
    bm25 = BM25Sparse()
    load_params_text(bm25, store.read_params(store.profile.sparse_params))
    return bm25
