"""A loopback server speaking the Jina Reranker API, and a client of it with tiny waits."""

from __future__ import annotations

import dataclasses
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rag.rerankers.jina import JinaReranker

JINA_KEY = "jina_test-key-0123456789abcdefSECRET"


def overlap_score(query: str, document: str) -> float:
    """The stub's relevance: shared lower-cased words over the document's word count + 1."""
    words = document.lower().split()
    return len(set(query.lower().split()) & set(words)) / (1 + len(words))


@dataclasses.dataclass
class Reply:
    """One planned answer of the stub: a status, headers, a JSON body (``None``: the
    documented success answer) or raw bytes, sent after ``delay`` seconds."""

    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: object = None
    raw: bytes | None = None
    delay: float = 0.0


class JinaStub(ThreadingHTTPServer):
    """A loopback server speaking the Jina Reranker API: ``POST /v1/rerank`` with
    ``{"model", "query", "documents", "top_n", "return_documents"}`` answers
    ``{"model", "usage", "results": [{"index", "relevance_score", "document"?}]}``, best
    first, ``top_n`` long. Planned ``replies`` are used first, in order."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), JinaHandler)
        self.replies: list[Reply] = []
        self.requests: list[dict] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"

    @staticmethod
    def answer(request: dict) -> dict:
        scores = [overlap_score(request["query"], d) for d in request["documents"]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        results = [{"index": i, "relevance_score": scores[i]} for i in order]
        if request.get("return_documents", True):
            for result in results:
                result["document"] = {"text": request["documents"][result["index"]]}
        tokens = sum(len(d.split()) for d in request["documents"])
        return {
            "model": request["model"],
            "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
            "results": results[: request.get("top_n") or len(results)],
        }


class JinaHandler(BaseHTTPRequestHandler):
    server: JinaStub

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "headers": dict(self.headers.items()), "body": request}
        )
        reply = self.server.replies.pop(0) if self.server.replies else Reply()
        time.sleep(reply.delay)
        if reply.raw is not None:
            data = reply.raw
        elif reply.body is not None:
            data = json.dumps(reply.body).encode()
        elif self.path != "/v1/rerank":
            reply, data = Reply(status=404), b'{"detail": "Not Found"}'
        else:
            data = json.dumps(JinaStub.answer(request)).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def jina_reranker(base_url: str, waits: list[float], **options) -> JinaReranker:
    """A client with tiny waits, recorded in ``waits`` instead of slept."""
    defaults = {"base_url": base_url, "timeout": 2.0, "max_retries": 2, "backoff": 0.001}
    return JinaReranker(JINA_KEY, sleep=waits.append, **(defaults | options))
