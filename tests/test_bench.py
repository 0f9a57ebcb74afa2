"""`python -m rag.bench` runs its three benchmarks end to end on small real inputs (speed is
reported, never asserted: the figures go to docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]


def _bench_lines(*args: str) -> list[dict]:
    """`python -m rag.bench ARGS --json`: its JSON objects, one a line."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "RAG_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "rag.bench", *args, "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _bench(*args: str) -> dict:
    (row,) = _bench_lines(*args)
    return row


@pytest.mark.slow
def test_ingest_runs_both_paths_on_the_same_chunks(tmp_path):
    result = _bench("ingest", "--corpus", str(SHARED_DATA / "beir" / "scifact"),
                    "--limit-docs", "12", "--db-dir", str(tmp_path))  # fmt: skip
    reference, ours = result["runs"]
    assert (reference["path"], ours["path"]) == ("reference", "ours")
    assert result["documents"] == 12 and ours["chunks"] == reference["chunks"] >= 12
    for run in (reference, ours):
        assert 0 < run["forward_seconds"] < run["seconds"]
        assert 0 < run["outside_forward_share"] < 1
    assert result["ratio"] == pytest.approx(ours["chunks_per_s"] / reference["chunks_per_s"],
                                            rel=0.02)  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # the two dbs were temporary


@pytest.mark.slow
def test_ingest_compares_profiles_on_the_same_documents(tmp_path):
    result = _bench("ingest", "--corpus", str(SHARED_DATA / "beir" / "scifact"),
                    "--limit-docs", "6", "--db-dir", str(tmp_path),
                    "--profile", "minilm-splade", "--profile", "multilingual")  # fmt: skip
    default, multilingual = result["runs"]
    assert (default["path"], multilingual["path"]) == ("minilm-splade", "multilingual")
    assert result["profile"] == ["minilm-splade", "multilingual"] and "ratio" not in result
    # each profile chunks with its own tokenizer (MiniLM's WordPiece, XLM-R's SentencePiece)
    assert default["chunks"] >= 6 and multilingual["chunks"] >= 6
    for run in (default, multilingual):  # BM25 has no torch module: e5's forward alone
        assert 0 < run["forward_seconds"] < run["seconds"]
    assert result["ratios"]["multilingual"] == pytest.approx(
        multilingual["chunks_per_s"] / default["chunks_per_s"], rel=0.02
    )


@pytest.mark.slow
def test_query_and_startup_run_against_an_ingested_collection(ingested):
    uri, collection, report = ingested
    result = _bench("query", "--db", uri, "--collection", collection, "-n", "12",
                    "--rerank-batch", "4")  # fmt: skip
    assert result["chunks"] == report.chunks_written and result["queries"] == 12
    latency = result["embed_search"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    # The default reranker (auto: MaxSim) is timed, with the batch size asked for.
    assert (result["reranker"], result["rerank_batch"]) == ("auto", 4)
    assert result["total_with_rerank"]["p50_ms"] > latency["p50_ms"]
    assert result["peak_rss_mb"] > 0 and result["db_size_mb"] > 0
    assert result["engine_peak_rss_mb"] > 0 and result["open_seconds"] > 0
    recall = _bench("recall", "--db", uri, "--collection", collection, "-n", "8")
    assert recall["index_type"] == "FLAT" and recall["queries"] == 8
    assert recall["rows"] == report.chunks_written
    assert recall["recall@10"] == 1.0  # FLAT is exact search
    twin = _bench("recall", "--db", uri, "--collection", collection, "-n", "8",
                  "--exact-collection", collection)  # fmt: skip
    assert (twin["rows"], twin["recall@10"]) == (report.chunks_written, 1.0)
    startup = _bench("startup", "--db", uri, "--collection", collection, "--repeat", "1")
    assert len(startup["seconds"]) == 1 and startup["seconds"][0] > 0
    unbatched = subprocess.run(
        [sys.executable, "-m", "rag.bench", "query", "--db", uri, "--collection", collection,
         "-n", "1", "--rerank", "none", "--rerank-batch", "4"],
        cwd=REPO, env=os.environ | {"HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert unbatched.returncode == 2 and "Traceback" not in unbatched.stderr
    assert "--rerank-batch: the reranker 'none' takes no batch size" in unbatched.stderr


@pytest.mark.slow
def test_grow_copies_real_chunks_and_query_runs_on_them(ingested, tmp_path):
    uri, collection, report = ingested
    target = report.chunks_written - 3
    bench_db = str(tmp_path / "bench.db")
    result = _bench("grow", "--from", uri, "--db", bench_db, "--target", str(target))
    assert result["chunks"] == target and result["collection"] == f"bench_{target}"
    assert [s["collection"] for s in result["sources"]] == [collection]
    queried = _bench("query", "--db", bench_db, "--collection", f"bench_{target}", "-n", "5")
    assert queried["chunks"] == target
    too_many = subprocess.run(
        [sys.executable, "-m", "rag.bench", "grow", "--from", uri, "--db", bench_db,
         "--target", str(10 * target)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert too_many.returncode == 2 and "more are needed" in too_many.stderr


def test_grow_reports_each_copied_page_and_stops_at_the_target(ingested, embedder, tmp_path):
    from rag.bench.grow import find_sources, grow
    from rag.store import CollectionProfile, MilvusStore

    uri, collection, report = ingested
    profile = CollectionProfile.of(embedder)
    sources = find_sources([uri], profile)
    target = report.chunks_written - 2
    store = MilvusStore.open(str(tmp_path / "grown.db"), "grown", profile)
    try:
        copied: list[int] = []
        assert grow(store, sources, target, copied.append) == target == store.count_chunks()
        assert sum(copied) == target and all(0 < n <= 1_000 for n in copied)
    finally:
        store.close()


def test_grow_with_repeat_copies_the_sources_again_under_new_ids(ingested, embedder, tmp_path):
    from rag.bench.grow import find_sources, grow
    from rag.store import CHUNK_FILTER, CollectionProfile, MilvusStore

    uri, collection, report = ingested
    profile = CollectionProfile.of(embedder)
    sources = find_sources([uri], profile)
    target = 2 * report.chunks_written + 5  # two copies and a few rows of a third
    store = MilvusStore.open(str(tmp_path / "grown.db"), "grown", profile)
    try:
        with pytest.raises(ValueError, match="more are needed"):
            grow(store, sources, target)  # without repeat the sources are too few
        assert grow(store, sources, target, repeat=True) == target == store.count_chunks()
        rows = store.client.query(  # the chunks (their section rows were copied with them)
            "grown", filter=CHUNK_FILTER, limit=target + 1, output_fields=["source", "text"]
        )
        assert len({row["id"] for row in rows}) == target  # every copy under its own id
        copies = {row["source"].split(":", 1)[0] for row in rows}
        assert copies == {collection, "copy1", "copy2"}
        # Every chunk's text and vectors are there twice or more: real rows, not distinct.
        assert min(Counter(row["text"] for row in rows).values()) >= 2
    finally:
        store.close()


@pytest.mark.parametrize(
    ("command", "setting", "message"),
    [
        (["query", "-n", "3"], "RAG_SPARSE_QUERY_TERMS=-1", "greater than or equal to 0"),
        (["query", "-n", "3"], "RAG_DENSE_INDEX=DISKANN", "unknown dense index 'DISKANN'"),
        (["grow", "--target", "10"], "RAG_DENSE_INDEX=DISKANN", "unknown dense index 'DISKANN'"),
    ],
)
def test_cli_refuses_a_bad_setting_with_its_reason(tmp_path, command, setting, message):
    key, value = setting.split("=")
    result = subprocess.run(
        [sys.executable, "-m", "rag.bench", *command, "--db", str(tmp_path / "x.db"),
         *(["--from", str(tmp_path / "src.db")] if command[0] == "grow" else [])],
        cwd=REPO, env=os.environ | {key: value}, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_recall_counts_the_copies_of_a_grown_collection_as_ties(ingested, embedder, tmp_path):
    """Repeated rows hold the same vector under other ids: FLAT returns any of them, and
    each counts as the exact neighbour it copies."""
    import numpy as np

    from rag.bench.grow import find_sources, grow
    from rag.bench.recall import dense_recall, stored_vectors
    from rag.store import CollectionProfile, MilvusStore

    uri, _, report = ingested
    profile = CollectionProfile.of(embedder)
    target = 3 * report.chunks_written  # every chunk three times
    store = MilvusStore.open(str(tmp_path / "grown.db"), "grown", profile)
    try:
        grow(store, find_sources([uri], profile), target, repeat=True)
        vectors = stored_vectors(store)
        assert vectors.shape == (target, profile.dim) and vectors.dtype == np.float32
        queries = embedder.encode_queries(["What is HNSW?", "sparse vectors", "IVF_PQ nlist"])
        result = dense_recall(store, np.asarray(queries.dense, dtype=np.float32), k=10)
        assert (result.rows, result.queries, result.k) == (target, 3, 10)
        assert result.recall == 1.0
        hits = store.search("dense", [queries.dense[0]], 10)
        scores = {round(hit["distance"], 4) for hit in hits}
        assert len({hit["id"] for hit in hits}) == 10 and len(scores) <= 4  # copies, by threes
    finally:
        store.close()


def test_exact_kth_scores_match_a_full_sort_and_count_copies_as_ties():
    import numpy as np

    from rag.bench.recall import exact_kth_scores

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((250_000, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    expected = np.sort(queries @ vectors.T, axis=1)[:, -10]
    assert np.allclose(exact_kth_scores(vectors, queries, 10), expected)
    copies = np.repeat(vectors[:3], 10, axis=0)  # three vectors, ten copies each
    kth = exact_kth_scores(copies, queries, 10)
    best = (queries @ vectors[:3].T).max(axis=1)
    assert np.allclose(kth, best)  # the ten copies of the best vector fill the top 10
    with pytest.raises(ValueError, match="fewer than k=10"):
        exact_kth_scores(vectors[:9], queries, 10)


def test_a_grown_chunk_maps_to_its_sets_document():
    from rag.bench.grown_eval import document_id, set_prefix
    from rag.eval.beir import BeirDataset

    prefix = set_prefix(BeirDataset(Path("beir/scifact"), "test", "beir/scifact"))
    assert prefix == "eval_beir_scifact_"
    collection = "eval_beir_scifact_minilm_splade_0a1b2c3d4e"
    assert document_id(f"{collection}:4983", prefix) == "4983"
    assert document_id(f"copy3:{collection}:4983", prefix) == "4983"  # a repeat's copy
    assert document_id(f"{collection}:<dbpedia:Oceanic_Airlines>", prefix) == (
        "<dbpedia:Oceanic_Airlines>"
    )  # DBpedia's ids hold colons
    assert document_id("docs:userGuide/hnsw.md", prefix) is None  # another corpus
    assert document_id("eval_beir_scifact_minilm_splade_0a1b2c3d4e", prefix) is None
    long = BeirDataset(Path("x"), "test", "a" * 70)
    assert set_prefix(long) == "eval_" + "a" * 60  # rag.eval cuts its names' slug there


def _xquad_part(folder: Path, first: int, count: int) -> Path:
    """XQuAD-R en paragraphs ``first`` … ``first + count - 1`` as a BEIR set, with their
    questions and judgments."""
    source = SHARED_DATA / "multilingual" / "xquad_r" / "en"
    (folder / "qrels").mkdir(parents=True)
    corpus = (source / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    corpus = corpus[first : first + count]
    (folder / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    kept = {json.loads(line)["_id"] for line in corpus}
    (folder / "queries.jsonl").write_bytes((source / "queries.jsonl").read_bytes())
    qrels = (source / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    rows = [qrels[0], *(row for row in qrels[1:] if row.split("\t")[1] in kept)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _eval_collection(uri: str, folder: Path, settings, embedder) -> tuple[str, int]:
    """Ingest a BEIR set into the collection `rag.eval` would make for it; returns its name
    and chunk count."""
    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker
    from rag.eval.beir import BeirDataset
    from rag.eval.runner import ChunkingConfig, collection_name
    from rag.store import CollectionProfile, MilvusStore

    dataset = BeirDataset.open(folder, "test")
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    profile = CollectionProfile.of(embedder)
    name = collection_name(
        dataset, dataset.corpus_hash(), profile, ChunkingConfig.of(settings, chunker)
    )
    store = MilvusStore.open(uri, name, profile)
    try:
        report = Ingestor(store, embedder, chunker).run_documents(dataset.documents())
    finally:
        store.close()
    return name, report.chunks_written


@pytest.mark.slow
def test_grown_eval_scores_a_set_among_other_chunks(tmp_path, settings, embedder):
    """In a collection grown from two sets (and a repeat of the first rows), exact dense
    search ranks the first set's documents as its own collection does: the other set's
    chunks and the copies are dropped, so the scores are the same."""
    from rag.bench.grow import find_sources, grow
    from rag.bench.grown_eval import score_in_collection, set_prefix
    from rag.eval.beir import BeirDataset
    from rag.eval.runner import DEFAULT_TOP_K, EvalMode, run_mode
    from rag.retriever import Retriever
    from rag.settings import SearchMode
    from rag.store import CollectionProfile, MilvusStore

    first = _xquad_part(tmp_path / "xquad_a", 0, 20)
    eval_db = str(tmp_path / "eval.db")
    name, chunks = _eval_collection(eval_db, first, settings, embedder)
    other, other_chunks = _eval_collection(eval_db, _xquad_part(tmp_path / "xquad_b", 20, 20),
                                           settings, embedder)  # fmt: skip
    dataset = BeirDataset.open(first, "test")
    assert name.startswith(set_prefix(dataset)) and not other.startswith(set_prefix(dataset))

    profile = CollectionProfile.of(embedder)
    bench_db = str(tmp_path / "bench.db")
    target = chunks + other_chunks + 10  # both sets, then ten rows again under new ids
    store = MilvusStore.open(bench_db, "grown", profile)
    try:
        assert grow(store, find_sources([eval_db], profile), target, repeat=True) == target
    finally:
        store.close()

    queries, qrels = dataset.judged_queries()
    retriever = Retriever.from_settings(settings.model_copy(update={"milvus_uri": eval_db,
                                                                    "collection": name}),
                                        embedder)  # fmt: skip
    try:
        (alone,) = run_mode(retriever, queries, qrels, EvalMode.DENSE, top_k=DEFAULT_TOP_K)
    finally:
        retriever.store.close()
    retriever = Retriever.from_settings(settings.model_copy(update={"milvus_uri": bench_db,
                                                                    "collection": "grown"}),
                                        embedder)  # fmt: skip
    try:
        grown = score_in_collection(retriever, queries, qrels, SearchMode.DENSE,
                                    set_prefix(dataset))  # fmt: skip
        first10 = dict(list(queries.items())[:10])
        first10_scores = score_in_collection(
            retriever, first10, {q: qrels[q] for q in first10}, SearchMode.DENSE,
            set_prefix(dataset),
        )  # fmt: skip
    finally:
        retriever.store.close()
    assert grown == pytest.approx(alone.scores, abs=1e-9)
    assert 0.5 < grown["ndcg@10"] < 1  # XQuAD-R questions find their paragraph, mostly

    rows = _bench_lines("grown-eval", str(first), "--db", bench_db, "--collection", "grown",
                        "--limit-queries", "10", "--depth", str(target))  # fmt: skip
    assert [row["mode"] for row in rows] == ["dense", "hybrid"]
    for row in rows:
        assert (row["collection"], row["index_type"], row["chunks"]) == ("grown", "FLAT", target)
        assert row["prefix"] == set_prefix(dataset) and row["queries"] == 10
        assert row["depth"] == target  # every row of the collection
        assert 0 <= row["recall@10"] <= row["recall@100"] <= 1
    assert rows[0]["ndcg@10"] == pytest.approx(first10_scores["ndcg@10"], abs=0.01)
