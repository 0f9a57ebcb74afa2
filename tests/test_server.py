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
from conftest import MILVUS_DOCS_EN

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
    """A `milvus-lite server` process on a free loopback port; yields its URI."""
    data = tmp_path_factory.mktemp("server") / "served.db"
    port = free_port()
    milvus_lite = Path(sys.executable).with_name("milvus-lite")
    process = subprocess.Popen(
        [str(milvus_lite), "server", "--data-dir", str(data), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


def test_ingest_in_one_process_while_another_searches(server, tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in PAGES:
        shutil.copy(MILVUS_DOCS_EN / "userGuide/indexes/floating-vector" / name, docs / name)
    store = MilvusStore.open(server, "served", CollectionProfile.of(embedder))
    try:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "ingest", str(docs), "--db", server, "--collection", "served"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
        [sys.executable, "-m", "rag", "search", "product quantization", "--db", server,
         "--collection", "served", "--json", "--top-k", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ivf-pq.md" in {Path(hit["source"]).name for hit in json.loads(result.stdout)}


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot open Milvus at http://127.0.0.1:"):
        MilvusStore.open(f"http://127.0.0.1:{free_port()}", "x")
