"""What the Streamlit page says when something fails: LLM faults, an embedding API that
fails or is down, a collection of another schema, and a Lite db held by another process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import streamlit as st
from conftest import (
    API_KEY,
    FLOATING_VECTOR_PAGES,
    MILVUS_DOCS_EN,
    build_api_db,
    free_port,
    serve_db,
)
from fake_llm import FakeLLM, Script
from streamlit.testing.v1 import AppTest
from ui_page import (
    QUERY,
    REPO,
    ask,
    assert_no_live_markup,
    rendered_text,
    shown_hits,
)

from rag.settings import get_settings
from rag.store import (
    BM25_FIELD,
    PROFILE_KEY,
    CollectionProfile,
    MilvusStore,
)


# ---------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("script", "expected", "requests"),
    [
        (Script(delay=3.0), "timed out (RAG_LLM_TIMEOUT)", 2),
        (Script(status=429, message="rate limit reached"), "answered HTTP 429: rate limit", 2),
        (Script(status=503, message="overloaded"), "answered HTTP 503: overloaded", 2),
        (Script(raw=b"data: {not json\n\n"), "sent a malformed response", 1),
        (Script(raw=b'data: {"choices": 7}\n\n'), "sent a malformed response", 1),
        (None, "cannot be reached", 0),  # connection refused
    ],
    ids=["timeout", "429", "5xx", "malformed-json", "malformed-chunk", "refused"],
)
def test_each_llm_fault_shows_its_reason_under_the_passages(
    start_app, ingested, fake_llm, monkeypatch, script, expected, requests
):
    monkeypatch.setenv("RAG_LLM_TIMEOUT", "1")
    url = fake_llm.base_url if script else f"http://127.0.0.1:{free_port()}/v1"
    fake_llm.script = script or Script()
    at = ask(start_app(*ingested[:2], llm=url), QUERY)

    assert not at.exception and not at.error
    (warning,) = at.warning
    reason = rendered_text(warning.value)
    assert reason.startswith(f"No generated answer: the LLM at {url} ") and expected in reason
    assert "\n" not in reason and "Traceback" not in reason
    assert len(shown_hits(at)) == get_settings().top_k
    assert len(fake_llm.requests) == requests  # one retry of a retryable failure, no more
    assert_no_live_markup(at)


@pytest.fixture(scope="module")
def api_db(tmp_path_factory):
    """An OpenAI + SPLADE db (``conftest.build_api_db``) and its embeddings API; ``(fake, uri)``."""
    fake = FakeLLM()
    yield fake, build_api_db(tmp_path_factory.mktemp("api_db"), fake.base_url)
    fake.close()


@pytest.fixture
def api_env(monkeypatch, api_db):
    """The environment of the app on ``api_db``: the fake's URL and key, one retry."""
    fake, _ = api_db
    for key, value in {
        "RAG_OPENAI_BASE_URL": fake.base_url,
        "RAG_OPENAI_API_KEY": API_KEY,
        "RAG_MAX_RETRIES": "1",
        "RAG_RETRY_BACKOFF": "0.01",
        "RAG_REQUEST_TIMEOUT": "1",
    }.items():
        monkeypatch.setenv(key, value)
    fake.embedding_script = Script()
    yield fake
    fake.embedding_script = Script()


@pytest.mark.parametrize(
    ("script", "expected", "requests"),
    [
        (Script(status=429, message="slow down"), "failed 2 times; last: HTTP 429", 2),
        (Script(status=502, message="bad gateway"), "failed 2 times; last: HTTP 502", 2),
        (Script(delay=2.0), "failed 2 times; last: ReadTimeout", 2),
        (Script(raw=b"<html>bad gateway</html>"), "answered with a body that is not JSON", 1),
        (Script(raw=b'{"data": 5}'), "unexpected answer", 1),
    ],
    ids=["429", "5xx", "timeout", "not-json", "malformed-json"],
)
def test_a_failing_embedding_api_gives_full_text_matches_and_the_reason(
    start_app, api_db, api_env, script, expected, requests
):
    at = start_app(api_db[1])
    assert not at.exception and not at.error
    api_env.embedding_script = script
    before = len(api_env.embedding_requests)
    at = ask(at, QUERY)

    assert not at.exception and not at.error
    assert len(api_env.embedding_requests) - before == requests
    notes = [rendered_text(w.value) for w in at.warning]
    (note,) = [n for n in notes if not n.startswith("No generated answer")]
    assert note.startswith(
        "the query could not be embedded, so these are full-text matches: OpenAI"
    )
    assert expected in note and API_KEY not in note
    store = MilvusStore.open(api_db[1], "docs")  # Milvus full-text search, directly
    matches, seen = store.search(BM25_FIELD, [QUERY], 1000), Counter()
    store.close()
    first, rest = [], []  # each page's first passage (RAG_PER_SOURCE=1), then the rest
    for raw in matches:  # in Milvus's order
        (rest if seen[raw["entity"]["source"]] else first).append(raw)
        seen[raw["entity"]["source"]] += 1
    spread = first + rest
    assert len(seen) < get_settings().top_k < len(matches)  # fewer pages than hits asked for
    expected_titles = [
        f"[{rank}] {raw['entity']['title']}"
        for rank, raw in enumerate(spread[: get_settings().top_k], 1)
    ]
    shown = shown_hits(at)
    assert [rendered_text(h["title"]) for h in shown] == expected_titles
    assert all(re.fullmatch(r"bm25 #\d+ · score [\d.]+", h["stages"]) for h in shown)


def test_an_embedding_api_down_at_start_is_a_clear_error(start_app, api_db, api_env, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("RAG_OPENAI_BASE_URL", url)
    at = start_app(api_db[1])

    assert not at.exception
    (error,) = at.error
    assert error.value.startswith(f"OpenAI: POST {url}/embeddings failed 2 times; last: Connect")
    assert not at.chat_input


def page_text(at: AppTest) -> str:
    """Everything the page holds: each element's protobuf as text, and each text value as a
    reader sees it (Markdown rendered)."""
    parts = []
    for node in at:
        parts.append(str(getattr(node, "proto", "")))
        value = getattr(node, "value", None)
        if isinstance(value, str):
            parts.append(rendered_text(value))
    return "\n".join(parts)


def test_api_keys_never_reach_the_page(start_app, api_db, api_env, fake_llm, monkeypatch):
    """The key of the LLM and of the embedding API, echoed back by failing servers, or in the
    LLM's URL, appears nowhere on the page."""
    monkeypatch.setenv("RAG_LLM_API_KEY", API_KEY)

    def failing(llm: str, llm_script: Script) -> AppTest:
        api_env.embedding_script = Script()  # the app starts (it embeds a probe)
        at = start_app(api_db[1], llm=llm)
        api_env.embedding_script = Script(status=400, message="bad request for {auth}")
        fake_llm.script = llm_script
        return ask(at, QUERY)

    echoed = failing(fake_llm.base_url, Script(status=401, message="Incorrect API key: {auth}"))
    port = fake_llm.server.server_port
    in_url = failing(
        f"http://user:{API_KEY}@127.0.0.1:{port}/v1", Script(status=503, message="overloaded")
    )

    assert fake_llm.headers[0]["authorization"] == f"Bearer {API_KEY}"  # the key was sent
    assert api_env.embedding_requests  # and the embedding API was called
    for at, llm_reason in ((echoed, "answered HTTP 401"), (in_url, "answered HTTP 503")):
        assert not at.exception and not at.error
        text = page_text(at)
        assert "rejected the request (HTTP 400)" in text and "for Bearer ***" in text
        assert llm_reason in text and API_KEY not in text
    assert f"http://127.0.0.1:{port}/v1" in page_text(in_url)  # the URL, without its key


def test_a_collection_of_another_schema_or_profile_says_the_way_out(
    start_app, tmp_path, embedder, monkeypatch
):
    uri = str(tmp_path / "old.db")
    for name in ("old", "current"):
        MilvusStore.open(uri, name, CollectionProfile.of(embedder)).close()
    store = MilvusStore.open(uri, "old")
    record = json.loads(store.read_record(PROFILE_KEY))
    store.write_records({PROFILE_KEY: json.dumps(record | {"schema_version": 0})})
    store.close()

    old = start_app(uri, "old")
    monkeypatch.setenv("RAG_PROFILE", "bge-m3")
    other_profile = start_app(uri, "current")

    for at, reason in (
        (old, "was built with schema v0 of this tool"),
        (other_profile, "but the settings ask for profile 'bge-m3'"),
    ):
        assert not at.exception and not at.chat_input
        (error,) = at.error
        assert reason in error.value and "python -m ingest PATH --reset" in error.value


# ---------------------------------------------------------------- concurrent use
def ingest_cli(folder: Path, uri: str, **env: str) -> subprocess.Popen:
    """`python -m ingest FOLDER --db URI` in a process of its own (one torch thread)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", str(folder), "--db", uri],
        cwd=REPO,
        env={**os.environ, "RAG_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pages_folder(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        shutil.copy(FLOATING_VECTOR_PAGES / name, folder)
    return folder


def holds_lock(db: Path, pid: int) -> bool:
    """Whether process ``pid`` holds the Milvus Lite db's lock (read from /proc/locks, which
    probing the lock ourselves would disturb)."""
    from rag.store.lite import engine

    lock = engine().lock_file(db)
    if not lock.exists():
        return False
    inode = lock.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if (
            fields[1] in ("POSIX", "FLOCK")
            and fields[4] == str(pid)
            and fields[5].endswith(f":{inode}")
        ):
            return True
    return False


def test_an_ingest_while_the_app_holds_the_lite_db_is_told_what_to_do(
    start_app, ingested, tmp_path
):
    uri, collection, _ = ingested
    at = start_app(uri, collection)  # this process now has the db open
    assert not at.error and at.chat_input
    files = {m.label: m.value for m in at.sidebar.metric}["Files"]

    ingest = ingest_cli(pages_folder(tmp_path / "docs", ["hnsw.md"]), uri)
    out, err = ingest.communicate(timeout=600)

    assert ingest.returncode == 2 and out == ""
    assert {m.label: m.value for m in at.run().sidebar.metric}["Files"] == files  # none added
    message = " ".join(err.split())
    assert f"the Milvus Lite db {uri} is in use by another process" in message
    assert "python -m rag serve-db" in message
    assert "RAG_MILVUS_URI=http://127.0.0.1:19530" in message
    assert "Traceback" not in err


def open_elsewhere(uri: str, collection: str) -> str:
    """Open the collection from another process: ``opened``, or the store's error."""
    code = (
        "from rag.store import MilvusStore, StoreError\n"
        "try:\n"
        f"    MilvusStore.open({uri!r}, {collection!r}, None, create=False).close()\n"
        "    print('opened')\n"
        "except StoreError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


def test_clearing_the_apps_cache_closes_its_client_and_frees_the_lite_db(start_app, ingested):
    uri, collection, _ = ingested
    at = start_app(uri, collection)
    assert not at.error and at.chat_input
    assert f"the Milvus Lite db {uri} is in use by another process" in open_elsewhere(
        uri, collection
    )

    st.cache_resource.clear()  # what the page menu's "Clear cache" does

    assert open_elsewhere(uri, collection) == "opened"
    at.run()  # the next run opens the collection again
    assert not at.exception and not at.error and at.chat_input


@pytest.mark.slow
def test_the_app_while_an_ingest_holds_the_lite_db_says_what_to_do(start_app, tmp_path):
    db = tmp_path / "busy.db"
    names = ["hnsw.md", "ivf-pq.md", "ivf-flat.md", "scann.md"]
    ingest = ingest_cli(pages_folder(tmp_path / "docs", names), str(db))
    try:
        deadline = time.monotonic() + 600
        while not holds_lock(db, ingest.pid):
            assert ingest.poll() is None, ingest.communicate()
            assert time.monotonic() < deadline, "the ingest never opened the db"
            time.sleep(0.2)
        at = start_app(str(db))
        assert ingest.poll() is None, "the ingest ended before the app opened: inconclusive"
    finally:
        out, err = ingest.communicate(timeout=1200)

    assert not at.exception and not at.chat_input
    (error,) = at.error
    assert f"the Milvus Lite db {db} is in use by another process" in error.value
    assert "python -m rag serve-db" in error.value
    assert ingest.returncode == 0, err
    assert f"files: {len(names)} added" in out

    at = start_app(str(db))  # the ingest ended: the app opens the db
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.sidebar.metric}["Files"] == str(len(names))


@pytest.mark.slow
def test_the_app_and_an_ingest_share_a_served_db(start_app, tmp_path, settings, embedder):
    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker

    served = tmp_path / "served.db"
    server, uri = serve_db(served, tmp_path / "serve-db.log")
    try:
        store = MilvusStore.open(uri, "docs", CollectionProfile.of(embedder))
        chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
        first = MILVUS_DOCS_EN / "userGuide/indexes/sparse/sparse-inverted-index.md"
        assert not Ingestor(store, embedder, chunker).run([first]).failed
        store.close()
        at = start_app(uri)
        assert not at.exception and not at.error

        names = ["hnsw.md", "ivf-pq.md", "flat.md"]
        ingest = ingest_cli(pages_folder(tmp_path / "docs", names), uri)
        asked = 0
        while ingest.poll() is None:  # the app keeps answering during the ingest
            at = ask(at, QUERY)
            asked += 1
            assert not at.exception and not at.error
            assert len(shown_hits(at)) > 0
        out, err = ingest.communicate()
        assert ingest.returncode == 0, err
        assert f"files: {len(names)} added" in out and asked >= 1

        shown_before = len(shown_hits(at))
        at = ask(at, "What does efConstruction control in HNSW?")
        assert not at.exception and not at.error
        assert {m.label: m.value for m in at.sidebar.metric}["Files"] == str(len(names) + 1)
        last_turn = shown_hits(at)[shown_before:]
        assert "hnsw.md" in rendered_text(last_turn[0]["where"])
    finally:
        server.terminate()
        server.wait(timeout=60)

    at.run()  # the server is gone: the page says so
    assert not at.exception
    (error,) = at.error
    assert rendered_text(error.value).startswith(f"Milvus at {uri} failed: ")
    assert "python -m rag serve-db" in rendered_text(error.value)
