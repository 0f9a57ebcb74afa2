"""The same code against a server: `milvus-lite server` on 127.0.0.1, several processes."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FLOATING_VECTOR_PAGES, serve_db

from rag.retriever import Retriever
from rag.store import CollectionProfile, MilvusStore, StoreError

REPO = Path(__file__).resolve().parents[1]
PAGES = ["hnsw.md", "flat.md", "ivf-pq.md"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m rag serve-db` (`milvus-lite server`) on a free loopback port; yields its
    URI."""
    folder = tmp_path_factory.mktemp("server")
    process, uri = serve_db(folder / "served.db", folder / "server.log")
    yield uri
    process.terminate()
    process.wait(timeout=30)


def test_ingest_in_one_process_while_another_searches(server, tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in PAGES:
        shutil.copy(FLOATING_VECTOR_PAGES / name, docs / name)
    store = MilvusStore.open(server, "served", CollectionProfile.of(embedder))
    try:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "ingest", str(docs), "--db", server, "--collection", "served"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        retriever = Retriever(store, embedder)
        searched = 0
        while ingest.poll() is None:  # this process keeps searching during the ingest
            retriever.search("HNSW graph layers", top_k=3)
            searched += 1
            time.sleep(0.5)
        out, err = ingest.communicate()
        assert ingest.returncode == 0, err
        assert "files: 3 added" in out
        assert searched > 0
        hits = retriever.search("What does efConstruction control in HNSW?", top_k=3)
        assert Path(hits[0].source).name == "hnsw.md"
        assert store.stats()["files"] == 3
    finally:
        store.close()


def test_cli_search_against_the_server(server, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rag",
            "search",
            "product quantization",
            "--db",
            server,
            "--collection",
            "served",
            "--json",
            "--top-k",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ivf-pq.md" in {Path(hit["source"]).name for hit in json.loads(result.stdout)}


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot open Milvus at http://127.0.0.1:"):
        MilvusStore.open(f"http://127.0.0.1:{free_port()}", "x")


def test_serve_db_refuses_a_db_that_another_process_has_open(tmp_path):
    from rag.store import connect, disconnect

    uri = str(tmp_path / "held.db")
    client = connect(uri)  # this process holds the Lite db
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rag", "serve-db", "--db", uri, "--port", "0"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        disconnect(client, uri)
    assert result.returncode == 2 and result.stdout == ""
    assert "is in use by another process" in " ".join(result.stderr.split())


@pytest.mark.slow
def test_load_script_runs_concurrent_clients_without_errors(tmp_path, settings, embedder):
    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker

    uri = str(tmp_path / "load.db")
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    pages = [FLOATING_VECTOR_PAGES / name for name in PAGES]
    report = Ingestor(store, embedder, chunker).run(pages)
    store.close()  # the script serves the db: this process must not hold it
    assert report.chunks_written > 0 and not report.failed

    result = subprocess.run(
        [
            sys.executable,
            "scripts/load_test.py",
            "--db",
            uri,
            "--clients",
            "2",
            "--queries",
            "10",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert (summary["clients"], summary["queries"], summary["ok"]) == (2, 20, 20)
    assert summary["errors"] == 0 and summary["error_messages"] == []
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["queries_per_s"] > 0
    reopened = MilvusStore.open(uri, "docs")  # the server stopped and released the db
    assert reopened.count_chunks() == report.chunks_written
    reopened.close()
