"""A scripted OpenAI-compatible endpoint on 127.0.0.1 (chat completions and embeddings), for
tests of failures and streams."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    """What the fake endpoint does with the next chat completion requests.

    Attributes:
        deltas: text chunks streamed as ``chat.completion.chunk`` events.
        status: an HTTP error status to answer instead (with ``message`` in an OpenAI-style
            error body); 0 streams normally.
        message: the error body's message; ``{auth}`` is replaced by the request's
            Authorization header (as a careless server might echo it).
        delay: seconds to wait before answering.
        raw: bytes sent as the whole event stream instead of ``deltas`` (malformed data).
        succeed: how many of the next requests are answered normally first (counts down).
    """

    deltas: list[str] = field(default_factory=lambda: ["Hello", " [1]."])
    status: int = 0
    message: str = "error"
    delay: float = 0.0
    raw: bytes | None = None
    succeed: int = 0


EMBEDDING_DIM = 8


def embedding(text: str) -> list[float]:
    """The fake's deterministic ``EMBEDDING_DIM``-d embedding of ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    return [byte / 255 - 0.5 for byte in digest[:EMBEDDING_DIM]]


class FakeLLM:
    """The endpoint: ``base_url`` for clients; ``script`` for chat completions and
    ``embedding_script`` for ``/embeddings`` (its ``deltas`` unused: a success answers
    :func:`embedding` of each input); the ``requests`` (and their ``headers``) of each."""

    def __init__(self) -> None:
        self.script = Script()
        self.embedding_script = Script()
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.embedding_requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._json(
                    200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
                )

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                embeddings = self.path.endswith("/embeddings")
                (fake.embedding_requests if embeddings else fake.requests).append(body)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                script = fake.embedding_script if embeddings else fake.script
                if script.succeed > 0:
                    script.succeed -= 1
                    script = Script(deltas=script.deltas)
                time.sleep(script.delay)
                if script.status:
                    message = script.message.replace(
                        "{auth}", self.headers.get("Authorization", "")
                    )
                    self._json(script.status, {"error": {"message": message, "type": "x"}})
                    return
                if embeddings:
                    self._embeddings(body, script)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if script.raw is not None:
                    self.wfile.write(script.raw)
                    return
                for delta in script.deltas:
                    chunk = {
                        "id": "c1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "delta": {"content": delta}, "finish_reason": None}
                        ],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

            def _embeddings(self, body: dict, script: Script) -> None:
                if script.raw is not None:
                    self._send(200, script.raw)
                    return
                data = [
                    {"object": "embedding", "index": i, "embedding": embedding(text)}
                    for i, text in enumerate(body["input"])
                ]
                self._json(200, {"object": "list", "data": data, "model": body["model"]})

            def _json(self, status: int, payload: dict) -> None:
                self._send(status, json.dumps(payload).encode())

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
