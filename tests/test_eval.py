"""Tests of the evaluation harness: metrics against hand computation, BEIR reading, resumable
ingest, and a small real evaluation end to end through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, run_eval
from cross_encoder_fixture import build_tiny_cross_encoder

from rag.eval.beir import BeirDataset, DatasetError, corpus_document, dataset_name
from rag.eval.metrics import METRIC_NAMES, collapse_to_documents, mean_scores, per_query
from rag.settings import DEFAULT_SPARSE_QUERY_TERMS

XQUAD_EN = SHARED_DATA / "multilingual" / "xquad_r" / "en"
CISI = SHARED_DATA / "classic" / "cisi"
REQUIRED_KEYS = {
    "dataset", "split", "mode", "profile", "ndcg@10", "recall@10", "recall@100", "mrr@10",
    "n_queries", "seconds",
}  # fmt: skip


# ----------------------------------------------------------------- metrics
def test_metrics_match_a_hand_computation():
    qrels = {
        # graded: a=2, b=1, c judged non-relevant, d relevant but ranked beyond 10
        "q1": {"a": 2, "b": 1, "c": 0, "d": 1},
        "q2": {"x": 1},
    }
    filler = [f"n{i}" for i in range(20)]
    rankings = {
        # q1: c (0), a (2), n0 (unjudged), b (1), then 8 fillers, d at rank 13
        "q1": ["c", "a", "n0", "b", *filler[1:9], "d"],
        # q2: x at rank 3
        "q2": ["n0", "n1", "x"],
    }
    # nDCG@10 with trec_eval's linear gains: DCG = sum rel_i / log2(i + 1)
    dcg1 = 2 / math.log2(3) + 1 / math.log2(5)
    idcg1 = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    ndcg2 = (1 / math.log2(4)) / 1.0
    expected = {
        "q1": {"ndcg@10": dcg1 / idcg1, "recall@10": 2 / 3, "recall@100": 1.0, "mrr@10": 1 / 2},
        "q2": {"ndcg@10": ndcg2, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1 / 3},
    }
    got = per_query(qrels, rankings)
    for qid, values in expected.items():
        for name, value in values.items():
            assert got[qid][name] == pytest.approx(value, abs=1e-6), (qid, name)
    means = mean_scores(qrels, rankings)
    assert set(means) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert means[name] == pytest.approx((expected["q1"][name] + expected["q2"][name]) / 2)


def test_a_query_without_results_counts_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    means = mean_scores(qrels, {"q1": ["a"], "q2": []})
    assert means == pytest.approx(dict.fromkeys(METRIC_NAMES, 0.5))
    assert mean_scores(qrels, {"q1": ["a"]}) == pytest.approx(dict.fromkeys(METRIC_NAMES, 0.5))


def test_collapse_keeps_each_documents_best_chunk_in_order():
    assert collapse_to_documents(["a", "b", "a", "c", "b", "d"]) == ["a", "b", "c", "d"]
    assert collapse_to_documents(["a", "a", "b", "c"], limit=2) == ["a", "b"]


# ----------------------------------------------------------------- dataset
def test_reads_a_real_beir_dataset():
    dataset = BeirDataset.open(CISI, "test")
    assert dataset.name == "classic/cisi"
    documents = list(dataset.documents())
    assert len(documents) == 1460
    assert documents[0].source == "1"
    assert documents[0].title.startswith("18 Editions of the Dewey")
    assert documents[0].sections[0].text.startswith("The present study")
    queries, qrels = dataset.judged_queries()
    assert 0 < len(queries) <= len(dataset.queries())
    assert set(queries) == set(qrels)
    assert all(any(s > 0 for s in judged.values()) for judged in qrels.values())
    first5, qrels5 = dataset.judged_queries(limit=5)
    assert list(first5) == list(queries)[:5] and set(qrels5) == set(first5)
    sample, qrels_sample = dataset.judged_queries(sample=20)
    assert len(sample) == 20 and set(qrels_sample) == set(sample)
    assert list(sample) == [qid for qid in queries if qid in sample]  # file order kept
    assert sample == dataset.judged_queries(sample=20)[0]  # seeded: the same sample
    assert list(sample) != list(queries)[:20]


def test_query_sample_spans_a_set_grouped_by_language():
    dataset = BeirDataset.open(SHARED_DATA / "multilingual" / "xquad_r" / "multi", "test")
    sample, _ = dataset.judged_queries(sample=220)
    languages = {qid.split("-", 1)[0] for qid in sample}
    assert len(languages) == 11


def test_dataset_errors_and_names(tmp_path):
    with pytest.raises(DatasetError, match="splits: test"):
        BeirDataset.open(CISI, "train")
    with pytest.raises(DatasetError, match="no corpus.jsonl"):
        BeirDataset.open(tmp_path, "test")
    assert dataset_name(XQUAD_EN / "sentences") == "xquad_r/en/sentences"
    assert dataset_name(XQUAD_EN) == "xquad_r/en"
    # a document without text is indexed by its title
    assert corpus_document({"_id": 7, "title": "Only a title", "text": ""}).sections[0].text == (
        "Only a title"
    )


# ----------------------------------------------------------------- ingest
def _sentences(n: int):
    dataset = BeirDataset.open(XQUAD_EN / "sentences", "test")
    return [d for _, d in zip(range(n), dataset.documents(), strict=False)]


@pytest.mark.slow
def test_ingest_resumes_a_killed_run_and_reuses_a_finished_one(tmp_path, settings, embedder):
    from ingest.pipeline import Ingestor, Status
    from rag.chunking import Chunker
    from rag.eval.runner import ChunkingConfig, collection_name
    from rag.store import CollectionProfile, MilvusStore

    documents = _sentences(12)
    profile = CollectionProfile.of(embedder)
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    dataset = BeirDataset.open(XQUAD_EN / "sentences", "test")
    config = ChunkingConfig(chunker.signature, settings.max_length)
    name = collection_name(dataset, "corpus-hash", profile, config)
    assert name == collection_name(dataset, "corpus-hash", profile, config)
    assert name.startswith("eval_xquad_r_en_sentences_minilm_splade_")
    other_chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap + 1)
    other = ChunkingConfig(other_chunker.signature, settings.max_length)
    assert collection_name(dataset, "corpus-hash", profile, other) != name
    assert collection_name(dataset, "other-corpus", profile, config) != name

    store = MilvusStore.open(str(tmp_path / "eval.db"), name, profile)
    try:
        # a run "killed" after the first 5 documents
        first = Ingestor(store, embedder, chunker, flush_chunks=2).run_documents(documents[:5])
        assert (first.count(Status.ADDED), first.chunks_written) == (5, 5)
        resumed = Ingestor(store, embedder, chunker, flush_chunks=4).run_documents(documents)
        assert (resumed.count(Status.UNCHANGED), resumed.chunks_written) == (5, 7)
        assert set(store.files()) == {d.source for d in documents}
        assert store.count_chunks() == 12
        again = Ingestor(store, embedder, chunker).run_documents(documents)
        assert (again.count(Status.UNCHANGED), again.chunks_written) == (12, 0)
    finally:
        store.close()


def test_precomputed_queries_match_direct_encoding(embedder):
    from rag.eval.runner import PrecomputedQueries

    texts = ["What is a Super Bowl?", "Who won in 2016?", "What is a Super Bowl?"]
    cached = PrecomputedQueries(embedder)
    cached.prepare(texts)
    direct = embedder.encode_queries([texts[1]])
    got = cached.encode_queries([texts[1]])
    np.testing.assert_allclose(got.dense, direct.dense, atol=1e-5)
    np.testing.assert_allclose(got.sparse.toarray(), direct.sparse.toarray(), atol=1e-5)
    assert cached.encode_queries(["not prepared"]).dense.shape == (1, embedder.dim)


# ----------------------------------------------------------------- end to end
def _eval_cli(*args: str) -> list[dict]:
    result = run_eval(*args, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_cli_refuses_a_bad_setting_with_its_reason(tmp_path):
    result = run_eval(str(XQUAD_EN), "--db", str(tmp_path / "x.db"),
                      env={"RAG_CHUNK_OVERLAP": "500"})  # fmt: skip
    assert result.returncode == 2
    assert "chunk_overlap must be smaller than chunk_size" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x.db").exists()


def _half_of_xquad_en(folder: Path) -> Path:
    """The first 120 of XQuAD-R en's 240 paragraphs, its queries, and the judgments on them."""
    folder.mkdir()
    (folder / "qrels").mkdir()
    corpus = (XQUAD_EN / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:120]
    (folder / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    kept = {json.loads(line)["_id"] for line in corpus}
    (folder / "queries.jsonl").write_bytes((XQUAD_EN / "queries.jsonl").read_bytes())
    qrels = (XQUAD_EN / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    rows = [qrels[0], *(row for row in qrels[1:] if row.split("\t")[1] in kept)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.mark.slow
def test_cli_runs_a_real_eval_end_to_end(tmp_path):
    dataset = _half_of_xquad_en(tmp_path / "xquad_r_en_half")
    db = str(tmp_path / "eval.db")
    rows = _eval_cli(str(dataset), "--split", "test", "--limit-queries", "25", "--db", db)
    by_mode = {row["mode"]: row for row in rows}
    modes = ["dense", "sparse", "bm25", "hybrid-rrf", "hybrid-weighted", "hybrid-convex"]
    # The default reranker (auto: maxsim for this profile) adds a reranked row per mode.
    assert list(by_mode) == [name for mode in modes for name in (mode, f"{mode}+rerank")]
    for mode in modes:
        base, reranked = by_mode[mode], by_mode[f"{mode}+rerank"]
        assert (base["reranker"], reranked["reranker"]) == (None, "maxsim")
        assert (reranked["rerank_depth"], reranked["rerank_weight"]) == (30, 0.5)
        assert reranked["recall@100"] == base["recall@100"]
    for row in rows:
        assert REQUIRED_KEYS <= set(row)
        assert row["dataset"].endswith("/xquad_r_en_half")
        assert (row["split"], row["profile"]) == ("test", "minilm-splade")
        assert row["n_queries"] == 25 and row["seconds"] >= 0
        for name in METRIC_NAMES:
            assert 0.0 <= row[name] <= 1.0
        assert row["recall@10"] <= row["recall@100"]
        assert row["chunks"] >= 120  # every paragraph is stored
    # XQuAD-R questions were written from their paragraph: every mode finds it easily.
    assert by_mode["bm25"]["ndcg@10"] >= 0.7
    assert by_mode["dense"]["ndcg@10"] >= 0.7
    assert by_mode["hybrid-rrf"]["ndcg@10"] >= 0.85
    assert by_mode["hybrid-weighted"]["ndcg@10"] >= 0.85
    assert by_mode["hybrid-convex"]["ndcg@10"] >= 0.85
    assert rows[0]["chunks_written"] == rows[0]["chunks"]
    assert rows[0]["sparse_query_terms"] == DEFAULT_SPARSE_QUERY_TERMS

    # The same corpus, profile and chunking: the collection is reused, nothing is embedded.
    again = _eval_cli(
        str(dataset), "--split", "test", "--limit-queries", "5", "--db", db, "--mode", "bm25"
    )
    assert [row["mode"] for row in again] == ["bm25", "bm25+rerank"]
    assert again[0]["chunks_written"] == 0
    assert again[0]["collection"] == rows[0]["collection"]
    assert again[0]["n_queries"] == 5


@pytest.mark.slow
def test_rerank_rows_rerank_the_same_candidates(tmp_path):
    dataset = _half_of_xquad_en(tmp_path / "xquad_r_en_half")
    model = str(build_tiny_cross_encoder(tmp_path / "tiny-cross-encoder"))
    common = (str(dataset), "--split", "test", "--limit-queries", "12", "--db",
              str(tmp_path / "eval.db"), "--mode", "hybrid-rrf", "--rerank", "cross-encoder",
              "--reranker-model", model)  # fmt: skip
    rows = _eval_cli(*common, "--rerank-depth", "20")
    assert [row["mode"] for row in rows] == ["hybrid-rrf", "hybrid-rrf+rerank"]
    base, reranked = rows
    assert (base["reranker"], reranked["reranker"]) == (None, "cross-encoder")
    assert reranked["rerank_depth"] == 20
    # Only the first 20 chunks are reordered: the 100 documents are the same candidates.
    assert reranked["recall@100"] == base["recall@100"]
    # The fixture's random scores reorder the head, so the top-10 metrics move.
    assert reranked["ndcg@10"] != base["ndcg@10"]

    # Reranking a single chunk changes nothing.
    again = _eval_cli(*common, "--rerank-depth", "1")
    assert again[1]["ndcg@10"] == again[0]["ndcg@10"] == base["ndcg@10"]
    assert again[1]["mrr@10"] == again[0]["mrr@10"]


@pytest.mark.slow
def test_context_recall_rows_per_budget_and_hit_list(tmp_path):
    dataset = _half_of_xquad_en(tmp_path / "xquad_r_en_half")
    rows = _eval_cli(
        str(dataset),
        "--split",
        "test",
        "--limit-queries",
        "10",
        "--db",
        str(tmp_path / "eval.db"),
        "--mode",
        "hybrid-convex",
        "--context-budget",
        "2000",
        "--context-budget",
        "150",
        "--context-seeds",
        "3",
        "--rerank",
        "none",
    )
    assert [row["mode"] for row in rows] == ["hybrid-convex"] * 5
    scores, *context = rows
    assert "row" not in scores and REQUIRED_KEYS <= set(scores)
    assert [(r["row"], r["hits"]) for r in context] == [
        ("context-recall@150", "top-k"), ("context-recall@2000", "top-k"),
        ("context-recall@150", "per-source-1"), ("context-recall@2000", "per-source-1"),
    ]  # fmt: skip
    for row in context:
        assert row["seeds"] == 3 and row["n_queries"] == 10
        # expansion adds neighbours of its seeds, never another document
        assert 0.0 <= row["expanded"] <= row["plain"] <= 1.0
        assert row["plain_whole"] <= row["plain"] and row["expanded_whole"] <= row["expanded"]
    low, high = context[:2]
    # a paragraph (one or two chunks) is the document: 2,000 tokens hold the first ten
    assert high["plain"] >= scores["recall@10"] >= low["plain"]
    assert high["plain"] >= 0.85


def test_a_judged_query_without_text_finds_nothing_and_counts_zero(ingested, embedder):
    """CMRC2018's trial split judges two queries whose text is empty: they score 0 instead of
    stopping the run."""
    from rag.eval.runner import EvalMode, run_mode
    from rag.retriever import Retriever
    from rag.settings import Fusion, Settings

    uri, collection, _ = ingested
    retriever = Retriever.from_settings(
        Settings(_env_file=None, milvus_uri=uri, collection=collection), embedder
    )
    queries = {"empty": "  ", "hnsw": "How does HNSW build its proximity graph?"}
    source = retriever.search(queries["hnsw"], top_k=1, fusion=Fusion.RRF)[0].source
    qrels = {"empty": {source: 1}, "hnsw": {source: 1}}
    (result,) = run_mode(retriever, queries, qrels, EvalMode.HYBRID_RRF, top_k=20)
    retriever.store.close()
    assert result.rankings["empty"] == [] and result.rankings["hnsw"][0] == source
    assert result.n_queries == 2 and result.scores["mrr@10"] == pytest.approx(0.5)
