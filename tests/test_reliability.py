"""Faults and secrets from the command line and in the logs: failing providers degrade to
ranked passages with the reason, a collection of another schema or profile names the way
out, and an API key never appears in any output, log record or exception."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import API_KEY, FLOATING_VECTOR_PAGES, build_api_db
from fake_llm import FakeLLM, Script

from rag.answer import LLM, AnswerStream
from rag.embedders import build_embedder
from rag.http import APIError
from rag.rerankers import RerankError
from rag.rerankers.jina import JinaReranker
from rag.settings import Settings
from rag.store import PROFILE_KEY, CollectionProfile, MilvusStore
from rag.types import Hit

REPO = Path(__file__).resolve().parents[1]
QUERY = "How do I build a FLAT index?"


@pytest.fixture(scope="module")
def fake():
    """One fake OpenAI-compatible server for the LLM, the embeddings and the reranker."""
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture(scope="module")
def api_uri(tmp_path_factory, fake) -> str:
    """A db of this module's own (subprocesses open it: no other test may hold it)."""
    return build_api_db(tmp_path_factory.mktemp("reliability_db"), fake.base_url)


@pytest.fixture
def scripts(fake):
    """Reset the fake's scripts after each test."""
    yield fake
    fake.script, fake.embedding_script = Script(), Script()


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m ARGS`` with the keys of every provider set to :data:`API_KEY`."""
    environment = {
        **os.environ,
        "RAG_NUM_THREADS": "1",
        "RAG_LLM_API_KEY": API_KEY,
        "RAG_OPENAI_API_KEY": API_KEY,
        "RAG_JINA_API_KEY": API_KEY,
        "RAG_MAX_RETRIES": "1",
        "RAG_RETRY_BACKOFF": "0.01",
        "RAG_REQUEST_TIMEOUT": "5",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- failing providers, CLI
def test_cli_search_degrades_to_full_text_and_keeps_the_retrieved_order(api_uri, scripts):
    """The embeddings API fails after the embedder was built: BM25 hits with a warning; the
    Jina reranker (served by the same fake) refuses the key: the retrieved order is kept."""
    scripts.embedding_script = Script(status=503, message="down {auth}", succeed=1)
    scripts.script = Script(status=401, message="Invalid key {auth}")  # /v1/rerank
    done = run(
        "rag",
        "search",
        QUERY,
        "--db",
        api_uri,
        "--json",
        "--top-k",
        "3",
        "--rerank",
        "jina",
        env={"RAG_OPENAI_BASE_URL": scripts.base_url, "RAG_JINA_BASE_URL": scripts.base_url},
    )

    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3] and "rerank_score" not in hits[0]
    assert any("flat" in h["source"].lower() for h in hits)
    warnings = one_line(done.stderr)
    assert (
        "warning the query could not be embedded, so these are full-text matches: OpenAI: POST"
        in warnings
        and "failed 2 times; last: HTTP 503" in warnings
    )
    assert (
        "warning reranking failed, retrieved order kept: Jina AI refused the API key (HTTP 401"
        in warnings
        and "check RAG_JINA_API_KEY" in warnings
    )
    assert "Traceback" not in done.stderr
    assert API_KEY not in done.stdout + done.stderr


def test_cli_never_prints_an_api_key(api_uri, scripts, tmp_path):
    """`answer --json` with the LLM echoing the key, `ingest` with the embeddings API echoing
    it, `embedders --json`: the key is in no output."""
    env = {"RAG_OPENAI_BASE_URL": scripts.base_url, "RAG_LLM_BASE_URL": scripts.base_url}
    scripts.script = Script(status=401, message="Incorrect API key provided: {auth}")
    answered = run("rag", "answer", QUERY, "--db", api_uri, "--json", "--per-source", "0", env=env)
    scripts.embedding_script = Script(status=400, message="no such model for {auth}")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.md").write_text("# Note\n\nA FLAT index compares the query with every vector.\n")
    ingested = run(
        "ingest",
        str(docs),
        "--db",
        str(tmp_path / "new.db"),
        "--dense",
        "openai",
        "--sparse",
        "splade",
        env=env,
    )
    listed = run("rag", "embedders", "--json", env=env)

    assert answered.returncode == 0, answered.stderr
    data = json.loads(answered.stdout)
    assert "answered HTTP 401: Incorrect API key provided: Bearer ***" in data["error"]
    assert len(data["hits"]) == 10 and data["answer"] == ""
    assert ingested.returncode == 2
    assert "OpenAI rejected the request (HTTP 400)" in one_line(ingested.stderr)
    assert "for Bearer ***" in ingested.stderr
    assert listed.returncode == 0
    openai = next(row for row in json.loads(listed.stdout) if row["name"] == "openai")
    assert openai["available"] and openai["reason"] == "key set (RAG_OPENAI_API_KEY)"
    for done in (answered, ingested, listed):
        assert "Traceback" not in done.stderr
        assert API_KEY not in done.stdout + done.stderr


# ---------------------------------------------------------------- another schema or profile
@pytest.mark.slow
def test_cli_on_a_collection_of_another_schema_says_the_way_out_and_it_works(tmp_path, embedder):
    uri = str(tmp_path / "old.db")
    store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
    record = json.loads(store.read_record(PROFILE_KEY))
    store.write_records({PROFILE_KEY: json.dumps(record | {"schema_version": 0})})
    store.close()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "flat.md").symlink_to(FLOATING_VECTOR_PAGES / "flat.md")

    searched = run("rag", "search", QUERY, "--db", uri, env={})
    ingested = run("ingest", str(docs), "--db", uri, env={})
    reset = run("ingest", str(docs), "--db", uri, "--reset", env={})

    for done in (searched, ingested):
        assert done.returncode == 2 and done.stdout == ""
        message = one_line(done.stderr)
        assert f"collection 'docs' at {uri} was built with schema v0 of this tool" in message
        assert "python -m ingest PATH --reset" in message and "Traceback" not in message
    assert reset.returncode == 0, reset.stderr
    assert "files: 1 added" in reset.stdout


# ---------------------------------------------------------------- logs and exceptions
def test_no_log_record_or_exception_holds_an_api_key(scripts, caplog):
    """Every provider fails in every way while the root logger takes DEBUG records: neither
    the records nor the exceptions hold the key, though the servers echo it."""
    caplog.set_level(logging.DEBUG)
    hits = [
        Hit(
            rank=1,
            score=1.0,
            chunk_id="c1",
            source="a.md",
            title="A",
            heading="A",
            page=0,
            text="A FLAT index compares the query with every vector.",
        )
    ]
    settings = Settings(
        _env_file=None,
        dense="openai",
        sparse="splade",
        openai_base_url=scripts.base_url,
        openai_api_key=API_KEY,
        openai_model="fake-embed",
        max_retries=1,
        retry_backoff=0.01,
        request_timeout=1.0,
    )
    embedder = build_embedder(settings)
    llm = LLM(scripts.base_url, "m", API_KEY, timeout=1.0, max_retries=1)
    reranker = JinaReranker(
        API_KEY, base_url=scripts.base_url, timeout=1.0, max_retries=1, backoff=0.01
    )
    failures = [
        Script(status=401, message="Incorrect API key provided: {auth}"),
        Script(status=400, message="bad request from {auth}"),
        Script(status=429, message="slow down, {auth}"),
        Script(status=503, message="overloaded for {auth}"),
        Script(delay=2.0),
        Script(raw=b"{not json"),
    ]
    errors: list[str] = []
    for failure in failures:
        scripts.script = scripts.embedding_script = failure
        errors.append(AnswerStream(QUERY, hits, llm).complete().error)
        for call, error_type in (
            (lambda: embedder.encode_queries([QUERY]), APIError),
            (lambda: reranker.rerank(QUERY, hits, 1), RerankError),
        ):
            with pytest.raises(error_type) as raised:
                call()
            errors.extend([str(raised.value), repr(raised.value)])

    assert len([e for e in errors if e]) == 5 * len(failures)
    assert any("Bearer ***" in error for error in errors)  # an echoed key, cut out
    logged = [record.getMessage() for record in caplog.records]
    assert any("POST" in line for line in logged)  # the HTTP clients did log the requests
    for text in errors + logged:
        assert API_KEY not in text
