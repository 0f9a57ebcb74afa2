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


def _bench(*args: str) -> dict:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "RAG_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "rag.bench", *args, "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


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
def test_query_and_startup_run_against_an_ingested_collection(ingested):
    uri, collection, report = ingested
    result = _bench("query", "--db", uri, "--collection", collection, "-n", "12")
    assert result["chunks"] == report.chunks_written and result["queries"] == 12
    latency = result["embed_search"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    assert result["peak_rss_mb"] > 0 and result["db_size_mb"] > 0
    assert result["engine_peak_rss_mb"] > 0 and result["open_seconds"] > 0
    recall = _bench("recall", "--db", uri, "--collection", collection, "-n", "8")
    assert (recall["index_type"], recall["rows"], recall["queries"]) == (
        "FLAT", report.chunks_written, 8)
    assert recall["recall@10"] == 1.0  # FLAT is exact search
    startup = _bench("startup", "--db", uri, "--collection", collection, "--repeat", "1")
    assert len(startup["seconds"]) == 1 and startup["seconds"][0] > 0


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
    from rag.store import CollectionProfile, MilvusStore

    uri, collection, report = ingested
    profile = CollectionProfile.of(embedder)
    sources = find_sources([uri], profile)
    target = 2 * report.chunks_written + 5  # two copies and a few rows of a third
    store = MilvusStore.open(str(tmp_path / "grown.db"), "grown", profile)
    try:
        with pytest.raises(ValueError, match="more are needed"):
            grow(store, sources, target)  # without repeat the sources are too few
        assert grow(store, sources, target, repeat=True) == target == store.count_chunks()
        rows = store.client.query(
            "grown", filter="", limit=target + 1, output_fields=["source", "text"]
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
