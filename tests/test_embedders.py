"""Embedding functions: the registry, availability, compositions, the recorded profile,
Instructor and mGTE code paths, ingest → search, the CLIs (what the encoders compute:
test_encoding.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from embedder_support import clean_settings, default_bm25, ingest, top_pages

from rag.embedders import build_embedder
from rag.embedders.bm25 import BM25Sparse
from rag.embedders.hybrid import DenseSparseEmbedder
from rag.embedders.packaged import model_languages, resolve_model
from rag.embedders.registry import (
    FUNCTIONS,
    UnknownProfileError,
    composition,
    listing,
    resolve,
    settings_for_record,
)
from rag.retriever import Retriever
from rag.store import CollectionProfile, MilvusStore

REPO = Path(__file__).resolve().parents[1]
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
        "--rerank",
        "none",
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


def test_model_languages_come_from_the_model_card(tmp_path):
    assert model_languages(MINILM) == ("en",)  # the packaged card: `language: en`
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "README.md").write_text("---\nlanguage:\n- de\n- fr\n---\n# A model\n")
    assert model_languages(str(listed)) == ("de", "fr")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "README.md").write_text("---\nlanguage: [de\n---\n")
    assert model_languages(str(broken)) == ()
    silent = tmp_path / "silent"
    silent.mkdir()
    (silent / "README.md").write_text("---\nlicense: mit\n---\n")
    assert model_languages(str(silent)) == ()  # a card that declares no language
    assert model_languages(str(tmp_path)) == ()  # no card
    assert model_languages("splade-tiny") == ()  # packaged without a card
    assert model_languages("nobody/not-cached-model") == ()  # never downloaded
