"""Embedding functions: the registry, availability, compositions, the recorded profile, BM25's
fit / save / load and refit policy, Instructor and mGTE code paths, ingest → search, the CLIs."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MILVUS_DOCS_EN, SHARED_DATA
from mgte_fixture import build_tiny_mgte

from ingest.fitting import after_ingest, prepare_ingest
from ingest.pipeline import Ingestor, Status
from rag.chunking import Chunker
from rag.embedders import build_embedder
from rag.embedders.bm25 import BM25Sparse, EnglishAnalyzer, NotFittedError
from rag.embedders.hybrid import DenseSparseEmbedder
from rag.embedders.packaged import resolve_model
from rag.embedders.registry import (
    FUNCTIONS,
    UnknownProfileError,
    composition,
    listing,
    resolve,
    settings_for_record,
)
from rag.retriever import Retriever
from rag.settings import Fusion, Normalisation, SearchMode, Settings
from rag.store import CollectionProfile, MilvusStore, ProfileMismatchError
from rag.store.fitted import (
    FIT_STATE_KEY,
    SparseParamsError,
    load_params,
    load_params_text,
    params_text,
    read_state,
)

REPO = Path(__file__).resolve().parents[1]
PAGES = MILVUS_DOCS_EN / "userGuide" / "indexes" / "floating-vector"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# The Milvus embedding overview's table: function -> (type, API or open-source).
OVERVIEW = {
    "default": ("dense", "open-source"),
    "sentence-transformer": ("dense", "open-source"),
    "bm25": ("sparse", "open-source"),
    "splade": ("sparse", "open-source"),
    "bge-m3": ("hybrid", "open-source"),
    "mgte": ("hybrid", "open-source"),
    "instructor": ("dense", "open-source"),
    "openai": ("dense", "API"),
    "voyageai": ("dense", "API"),
    "jina": ("dense", "API"),
    "cohere": ("dense", "API"),
    "mistral": ("dense", "API"),
    "nomic": ("dense", "API"),
}
# Added for the offline multilingual profile (packaged weights).
MULTILINGUAL = {
    "multilingual-e5": ("dense", "open-source"),
    "bm25-multilingual": ("sparse", "open-source"),
}


def clean_settings(**values) -> Settings:
    return Settings(_env_file=None, num_threads=1, **values)


def default_bm25(embedder, **bm25) -> DenseSparseEmbedder:
    """``default+bm25`` with a fresh BM25, sharing the session's loaded MiniLM (what
    ``build_embedder`` builds for it, see ``test_build_embedder_composes_the_functions``)."""
    return DenseSparseEmbedder(
        "default+bm25", embedder.dense, BM25Sparse(**bm25), embedder.tokenizer, 512
    )


def ingest(store, embedder, paths, *, drift=0.2, refit=False):
    """One ingest as ``python -m ingest`` runs it: prepare, run, then the refit policy."""
    prepare_ingest(store, embedder, refit=refit)
    chunker = Chunker.from_settings(embedder.tokenizer, clean_settings())  # with section rows
    report = Ingestor(store, embedder, chunker).run(sorted(paths))
    assert not report.failed, report.failed
    return report, after_ingest(store, embedder, refit_now=refit, drift=drift)


def top_pages(hits) -> list[str]:
    return [Path(h.source).name for h in hits]


# ----------------------------------------------------------------- registry
def test_registry_lists_every_function_of_the_overview():
    rows = listing(clean_settings())
    assert {row["name"]: (row["type"], row["access"]) for row in rows} == OVERVIEW | MULTILINGUAL
    for row in rows:
        assert all(name.startswith("RAG_") for name in row["settings"] + row["common_settings"])
    by_name = {row["name"]: row for row in rows}
    assert "RAG_BM25_K1" in by_name["bm25"]["settings"]
    assert "RAG_OPENAI_API_KEY" in by_name["openai"]["settings"]
    assert "RAG_REQUEST_TIMEOUT" in by_name["cohere"]["common_settings"]


def test_availability_says_what_runs_here_and_why():
    settings = clean_settings()
    here = {name: f.available(settings) for name, f in FUNCTIONS.items()}
    for name in ("default", "sentence-transformer", "splade", "multilingual-e5"):
        assert here[name] == (True, "packaged weights")
    assert here["bm25"] == (True, "no weights: fitted on the ingested corpus")
    for name, model in (
        ("bge-m3", "BAAI/bge-m3"),
        ("mgte", "Alibaba-NLP/gte-multilingual-base"),
        ("instructor", "hkunlp/instructor-large"),
    ):
        available, reason = here[name]
        assert not available and reason.startswith(f"weights missing: {model}")
    assert here["openai"] == (False, "no API key: set RAG_OPENAI_API_KEY")
    local = FUNCTIONS["instructor"].available(
        clean_settings(instructor_model=resolve_model(MINILM))
    )
    assert local[0] and local[1].startswith("local weights")


@pytest.mark.parametrize(
    "values,expected",
    [
        ({}, ("minilm-splade", None, "sentence-transformer", "splade")),
        ({"profile": "bge-m3"}, ("bge-m3", "bge-m3", None, None)),
        ({"profile": "mgte"}, ("mgte", "mgte", None, None)),
        ({"dense": "default", "sparse": "bm25"}, ("default+bm25", None, "default", "bm25")),
        ({"profile": "openai+splade"}, ("openai+splade", None, "openai", "splade")),
        (
            {"dense": "sentence-transformer", "sparse": "splade"},
            ("minilm-splade", None, "sentence-transformer", "splade"),
        ),
        (
            {"profile": "bge-m3", "dense": "cohere", "sparse": "bm25"},
            ("cohere+bm25", None, "cohere", "bm25"),
        ),
    ],
)
def test_settings_select_a_composition(values, expected):
    chosen = resolve(clean_settings(**values))
    assert (chosen.name, chosen.hybrid, chosen.dense, chosen.sparse) == expected
    assert composition(chosen.name) == chosen


@pytest.mark.parametrize(
    "values,message",
    [
        ({"dense": "default"}, "give both a dense and a sparse function"),
        ({"profile": "bm25"}, "'bm25' is a sparse function: pair it, e.g. profile 'default+bm25'"),
        (
            {"profile": "openai"},
            "'openai' is a dense function: pair it, e.g. profile 'openai+bm25'",
        ),
        ({"dense": "bge-m3", "sparse": "bm25"}, "'bge-m3' is a hybrid function (use it alone"),
        ({"dense": "splade", "sparse": "bm25"}, "'splade' is a sparse function (not dense)"),
        ({"profile": "default+word2vec"}, "unknown sparse function 'word2vec'; choose one of bm25"),
        ({"profile": "e5"}, "unknown embedder profile 'e5'; choose one of minilm-splade, bge-m3"),
    ],
)
def test_impossible_compositions_are_refused_with_a_hint(values, message):
    with pytest.raises(UnknownProfileError, match=re.escape(message)):
        resolve(clean_settings(**values))


def test_the_default_profile_builds_and_records_exactly_as_before(embedder):
    legacy = {
        "profile": "minilm-splade",
        "dense_model": MINILM,
        "sparse_model": "splade-tiny",
        "dim": 384,
        "vocab_size": 30522,
        "schema_version": 4,
    }  # what collections of this schema hold in their rag.profile property
    record = CollectionProfile.of(embedder)
    assert record == CollectionProfile(**legacy)
    assert record.composition() == record and not record.fitted
    assert asdict(record) == legacy | {"sparse_params": ""}
    assert (type(embedder.dense.documents).__name__, type(embedder.sparse).__name__) == (
        "SentenceTransformerDense",
        "SpladeSparse",
    )  # queries on the int8 export of the same model (RAG_DENSE_QUERY_INT8)


def test_search_rebuilds_the_recorded_composition_unless_told_otherwise():
    record = CollectionProfile("openai+bm25", "openai:text-embedding-3-large", "bm25", 3072, 9)
    rebuilt = settings_for_record(clean_settings(), record)
    assert resolve(rebuilt).name == "openai+bm25"
    assert rebuilt.openai_model == "text-embedding-3-large"
    legacy = CollectionProfile("minilm-splade", "/models/minilm", "splade-tiny", 384, 30522)
    rebuilt = settings_for_record(clean_settings(), legacy)
    assert (rebuilt.profile, rebuilt.dense_model, rebuilt.sparse_model) == (
        "minilm-splade",
        "/models/minilm",
        "splade-tiny",
    )
    explicit = clean_settings(profile="bge-m3")
    assert settings_for_record(explicit, record) is explicit
    kept = settings_for_record(clean_settings(dense_model="other/model"), legacy)
    assert kept.dense_model == "other/model"  # explicit: the profile check will refuse it


def test_pymilvus_model_classes_in_use_never_install_anything(tiny_mgte_dir):
    """pymilvus.model runs `pip install` (``utils.prompt_install``) when a dependency check
    of one of its classes finds a package missing, on import or in a constructor; every class
    this project builds (BM25 and mGTE; the benchmark's reference path: sentence-transformers
    and SPLADE) finds its dependencies pinned and installed. The probe shows the hook catches
    the check of a package that is not installed."""
    code = (
        "import sys\n"
        "import pymilvus.model.utils as utils\n"
        "class Refused(BaseException): pass\n"
        "def refuse(package, warn=False):\n"
        "    raise Refused(f'pymilvus.model would pip install {package}')\n"
        "utils.prompt_install = refuse\n"
        "try:\n"
        "    utils._check_library('rag_absent_probe_module')\n"
        "    sys.exit('the hook missed pymilvus.model install of a missing package')\n"
        "except Refused:\n"
        "    pass\n"
        "from pymilvus.model.dense import SentenceTransformerEmbeddingFunction\n"
        "from pymilvus.model.hybrid.mgte import MGTEEmbeddingFunction\n"
        "from pymilvus.model.sparse import SpladeEmbeddingFunction\n"
        "from pymilvus.model.sparse.bm25.bm25 import BM25EmbeddingFunction\n"
        "from rag.embedders.bm25 import EnglishAnalyzer\n"
        "minilm, splade, mgte = sys.argv[1:]\n"
        "BM25EmbeddingFunction(analyzer=EnglishAnalyzer())\n"
        "MGTEEmbeddingFunction(model_name=mgte, device='cpu')\n"
        "SentenceTransformerEmbeddingFunction(model_name=minilm)\n"
        "SpladeEmbeddingFunction(model_name=splade)\n"
    )
    models = resolve_model(MINILM), resolve_model("splade-tiny"), str(tiny_mgte_dir)
    result = run("-c", code, *models, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


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
    pages = [PAGES / "flat.md", PAGES / "ivf-flat.md", PAGES / "ivf-sq8.md"]
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


@pytest.fixture
def small_docs(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("flat.md", "ivf-flat.md"):
        shutil.copy(PAGES / name, folder / name)
    return folder


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


# ----------------------------------------------------------------- end to end, other functions
def test_build_embedder_composes_the_functions(embedder):
    built = build_embedder(clean_settings(dense="default", sparse="bm25"))
    assert built.profile == "default+bm25" and built.dense_name == MINILM
    assert type(built.sparse) is BM25Sparse and built.vocab_size == 0
    assert CollectionProfile.of(built) == CollectionProfile.of(default_bm25(embedder))
    spans = built.tokenizer.token_spans("Hybrid search")
    assert spans == embedder.tokenizer.token_spans("Hybrid search")


def test_default_with_splade_runs_end_to_end(tmp_path, small_docs, embedder):
    composed = DenseSparseEmbedder(
        "default+splade", embedder.dense, embedder.sparse, embedder.tokenizer, 512
    )
    store = MilvusStore.open(str(tmp_path / "ds.db"), "docs", CollectionProfile.of(composed))
    try:
        ingest(store, composed, small_docs.iterdir())
        assert store.profile.profile == "default+splade" and store.profile.vocab_size == 30522
        hits = Retriever(store, composed).search("nprobe clusters IVF_FLAT", top_k=3)
        assert top_pages(hits)[0] == "ivf-flat.md"
    finally:
        store.close()


def test_instructor_keeps_the_instruction_out_of_the_pooling():
    """Instructor has no packaged weights: its code path runs on the packaged MiniLM, a
    stand-in sentence-transformers model (the vectors mean nothing for INSTRUCTOR)."""
    from rag.embedders.instructor import InstructorDense

    model = resolve_model(MINILM)
    instructor = InstructorDense(model, max_length=128)
    text = ["HNSW builds a layered graph."]
    document, query = instructor.encode_documents(text), instructor.encode_queries(text)
    assert document.shape == (1, 384) and document.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(document), 1.0, rtol=1e-5)
    assert float(document[0] @ query[0]) < 0.9999  # the instruction matters

    pooled = instructor.model.encode(
        text, prompt=instructor.document_prompt, output_value="token_embeddings"
    )[0]
    prompt = instructor.model.tokenizer(instructor.document_prompt)["input_ids"]
    prompt_tokens = len(prompt) - 1  # [CLS] and the instruction, not its [SEP]
    expected = pooled[prompt_tokens:].mean(0).numpy()
    np.testing.assert_allclose(document[0], expected / np.linalg.norm(expected), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_mgte_dir(tmp_path_factory) -> Path:
    return build_tiny_mgte(tmp_path_factory.mktemp("tiny-mgte"))


def test_mgte_runs_through_pymilvus_class_end_to_end(tmp_path, small_docs, tiny_mgte_dir):
    """mGTE has no packaged weights: a tiny random-weight model with the checkpoint's layout
    (remote code, one-logit token head) runs pymilvus' MGTEEmbeddingFunction for real; the
    vectors mean nothing."""
    settings = clean_settings(profile="mgte", mgte_model=str(tiny_mgte_dir), max_length=128)
    assert FUNCTIONS["mgte"].available(settings)[0]
    mgte = build_embedder(settings)
    assert (mgte.profile, mgte.dim, mgte.vocab_size) == ("mgte", 32, 30522)
    out = mgte.encode_documents(["Milvus stores vectors.", "[CLS] and [SEP] stay out."])
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, rtol=1e-5)
    assert out.sparse.nnz > 4 and not {0, 101, 102} & set(out.sparse.indices.tolist())

    store = MilvusStore.open(str(tmp_path / "mgte.db"), "docs", CollectionProfile.of(mgte))
    try:
        report, refitted = ingest(store, mgte, small_docs.iterdir())
        assert refitted is None and report.chunks_written == store.count_chunks() > 0
        assert len(Retriever(store, mgte).search("nprobe", top_k=3)) == 3
    finally:
        store.close()


# ----------------------------------------------------------------- query terms
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
    bm25.fit([page.read_text(encoding="utf-8") for page in sorted(PAGES.glob("*.md"))])
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


# ----------------------------------------------------------------- CLIs
def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    # COLUMNS: rich wraps tables to the terminal width, 80 columns without a terminal.
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    return env | offline | {"RAG_NUM_THREADS": "1"}


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cli_env(),
        timeout=timeout,
        check=False,
    )


def test_cli_lists_the_embedding_functions():
    result = run("-m", "rag", "embedders", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {row["name"]: (row["type"], row["access"]) for row in rows} == OVERVIEW | MULTILINGUAL
    table = run("-m", "rag", "embedders")
    text = " ".join(table.stdout.split())
    assert "Current profile: minilm-splade" in text and "RAG_DENSE=default RAG_SPARSE=bm25" in text
    assert "no API key: set RAG_VOYAGE_API_KEY" in text


@pytest.mark.slow
def test_cli_ingests_with_a_composition_and_search_reuses_it(tmp_path, small_docs):
    db = str(tmp_path / "cli.db")
    ingest_args = (
        "-m",
        "ingest",
        str(small_docs),
        "--db",
        db,
        "--dense",
        "default",
        "--sparse",
        "bm25",
    )
    first = run(*ingest_args)
    assert first.returncode == 0, first.stderr
    assert "files: 2 added" in first.stdout and "BM25 refitted (first fit)" in first.stdout

    search = run(
        "-m",
        "rag",
        "search",
        "nprobe clusters",
        "--db",
        db,
        "--mode",
        "sparse",
        "--json",
        "--top-k",
        "3",
    )
    assert search.returncode == 0, search.stderr
    assert Path(json.loads(search.stdout)[0]["source"]).name == "ivf-flat.md"

    again = run(*ingest_args, "--refit-bm25")
    assert again.returncode == 0, again.stderr
    assert (
        "2 unchanged" in again.stdout and "BM25 refitted (asked with --refit-bm25)" in again.stdout
    )


@pytest.mark.slow
def test_eval_compares_profiles(tmp_path):
    xquad = SHARED_DATA / "multilingual" / "xquad_r" / "en"
    dataset = tmp_path / "xquad_en_small"
    (dataset / "qrels").mkdir(parents=True)
    corpus = (xquad / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    (dataset / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    kept = {json.loads(line)["_id"] for line in corpus}
    (dataset / "queries.jsonl").write_bytes((xquad / "queries.jsonl").read_bytes())
    qrels = (xquad / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    rows = [qrels[0], *(row for row in qrels[1:] if row.split("\t")[1] in kept)]
    (dataset / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    result = run(
        "-m",
        "rag.eval",
        str(dataset),
        "--db",
        str(tmp_path / "eval.db"),
        "--profile",
        "minilm-splade",
        "--profile",
        "default+bm25",
        "--mode",
        "sparse",
        "--mode",
        "hybrid-rrf",
        "--limit-queries",
        "10",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["profile"], r["mode"]) for r in scored] == [
        ("minilm-splade", "sparse"),
        ("minilm-splade", "hybrid-rrf"),
        ("default+bm25", "sparse"),
        ("default+bm25", "hybrid-rrf"),
    ]
    assert scored[0]["collection"] != scored[2]["collection"]
    by = {(r["profile"], r["mode"]): r["ndcg@10"] for r in scored}
    assert by[("default+bm25", "sparse")] >= 0.7  # XQuAD-R questions reuse their paragraph's words
    assert "BM25 refitted (first fit)" in " ".join(result.stderr.split())


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
