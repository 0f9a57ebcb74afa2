"""Dense embeddings from hosted APIs: OpenAI (or any OpenAI-compatible server), Voyage AI,
Jina AI, Cohere, Mistral AI and Nomic, each through its documented HTTP request.

Every provider takes ``Authorization: Bearer <key>`` and JSON; the requests and answers used:

- OpenAI, ``POST {base}/embeddings`` (https://platform.openai.com/docs/api-reference/embeddings):
  ``{"model", "input": [...], "encoding_format": "float"}`` → ``{"data": [{"index",
  "embedding"}]}``; at most 2048 inputs and 300,000 tokens summed per request.
- Voyage AI, ``POST {base}/embeddings`` (https://docs.voyageai.com/reference/embeddings-api):
  ``{"model", "input", "input_type": "query" | "document"}`` → ``{"data": [{"index",
  "embedding"}]}``; at most 1,000 inputs and 120K tokens (voyage-3-large; more for others).
- Jina AI, ``POST {base}/embeddings`` (https://jina.ai/embeddings, https://api.jina.ai/openapi.json):
  ``{"model", "input", "task": "retrieval.query" | "retrieval.passage", "embedding_type":
  "float"}`` → ``{"data": [{"index", "embedding"}]}``.
- Cohere v2, ``POST {base}/embed`` (https://docs.cohere.com/reference/embed): ``{"model",
  "texts", "input_type": "search_query" | "search_document", "embedding_types": ["float"]}``
  → ``{"embeddings": {"float": [[...]]}}``; at most 96 texts per request.
- Mistral AI, ``POST {base}/embeddings`` (https://docs.mistral.ai/api/endpoint/embeddings):
  ``{"model", "input"}`` → ``{"data": [{"index", "embedding"}]}``.
- Nomic, ``POST {base}/embedding/text``
  (https://docs.nomic.ai/reference/api/embed-text-v-1-embedding-text-post): ``{"model",
  "texts", "task_type": "search_query" | "search_document"}`` → ``{"embeddings": [[...]]}``.

Where the reference states no per-request limit (Jina, Mistral, Nomic) a conservative number
of inputs is sent. Token limits are kept by counting UTF-8 bytes, an upper bound of the
tokens of a byte-level or word-piece tokenizer (every token covers at least one byte).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rag.embedders.base import l2_normalize
from rag.http import APIError, JSONClient

# The text embedded once to learn a model's dimension when nothing was embedded yet.
DIMENSION_PROBE = "dimension probe"


def _indexed_data(payload: dict, n: int) -> list:
    """Embeddings from an OpenAI-style ``{"data": [{"index", "embedding"}]}`` answer."""
    data = payload.get("data")
    if not isinstance(data, list) or len(data) != n:
        raise ValueError(f"expected 'data' with {n} embeddings")
    vectors: list = [None] * n
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < n or vectors[index] is not None:
            raise ValueError(f"bad or repeated 'index' in {str(item)[:80]}")
        vectors[index] = item.get("embedding")
    return vectors


def _cohere_data(payload: dict, n: int) -> list:
    embeddings = payload.get("embeddings")
    vectors = embeddings.get("float") if isinstance(embeddings, dict) else None
    if not isinstance(vectors, list) or len(vectors) != n:
        raise ValueError(f"expected 'embeddings.float' with {n} embeddings")
    return vectors


def _nomic_data(payload: dict, n: int) -> list:
    vectors = payload.get("embeddings")
    if not isinstance(vectors, list) or len(vectors) != n:
        raise ValueError(f"expected 'embeddings' with {n} embeddings")
    return vectors


@dataclass(frozen=True)
class Provider:
    """One embedding API: its route, request body, answer and limits.

    Attributes:
        name: the registry name (``openai``).
        title: the name messages show (``OpenAI``).
        key_setting: the environment variable of its key.
        path: appended to the base URL.
        max_inputs: texts per request.
        max_tokens: tokens per request (bounded by UTF-8 bytes), ``None`` if unlimited.
        body: ``(model, texts, is_query) -> JSON body``.
        data: ``(answer, n) -> n embeddings`` in input order; raises ``ValueError``.
    """

    name: str
    title: str
    key_setting: str
    path: str
    max_inputs: int
    max_tokens: int | None
    body: Callable[[str, list[str], bool], dict]
    data: Callable[[dict, int], list]


PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (
        Provider(
            name="openai",
            title="OpenAI",
            key_setting="RAG_OPENAI_API_KEY",
            path="/embeddings",
            max_inputs=2048,
            max_tokens=300_000,
            body=lambda model, texts, query: {
                "model": model,
                "input": texts,
                "encoding_format": "float",
            },
            data=_indexed_data,
        ),
        Provider(
            name="voyageai",
            title="Voyage AI",
            key_setting="RAG_VOYAGE_API_KEY",
            path="/embeddings",
            max_inputs=1000,
            max_tokens=120_000,
            body=lambda model, texts, query: {
                "model": model,
                "input": texts,
                "input_type": "query" if query else "document",
            },
            data=_indexed_data,
        ),
        Provider(
            name="jina",
            title="Jina AI",
            key_setting="RAG_JINA_API_KEY",
            path="/embeddings",
            max_inputs=512,
            max_tokens=None,
            body=lambda model, texts, query: {
                "model": model,
                "input": texts,
                "task": "retrieval.query" if query else "retrieval.passage",
                "embedding_type": "float",
            },
            data=_indexed_data,
        ),
        Provider(
            name="cohere",
            title="Cohere",
            key_setting="RAG_COHERE_API_KEY",
            path="/embed",
            max_inputs=96,
            max_tokens=None,
            body=lambda model, texts, query: {
                "model": model,
                "texts": texts,
                "input_type": "search_query" if query else "search_document",
                "embedding_types": ["float"],
            },
            data=_cohere_data,
        ),
        Provider(
            name="mistral",
            title="Mistral AI",
            key_setting="RAG_MISTRAL_API_KEY",
            path="/embeddings",
            max_inputs=128,
            max_tokens=None,
            body=lambda model, texts, query: {"model": model, "input": texts},
            data=_indexed_data,
        ),
        Provider(
            name="nomic",
            title="Nomic",
            key_setting="RAG_NOMIC_API_KEY",
            path="/embedding/text",
            max_inputs=256,
            max_tokens=None,
            body=lambda model, texts, query: {
                "model": model,
                "texts": texts,
                "task_type": "search_query" if query else "search_document",
            },
            data=_nomic_data,
        ),
    )
}


def request_batches(
    texts: Sequence[str], max_inputs: int, max_tokens: int | None
) -> list[list[int]]:
    """Consecutive index groups of ``texts``, each within ``max_inputs`` texts and (when
    given) ``max_tokens`` UTF-8 bytes; a text over the byte budget alone goes alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, text in enumerate(texts):
        length = len(text.encode("utf-8"))
        over_tokens = max_tokens is not None and size + length > max_tokens
        if current and (len(current) == max_inputs or over_tokens):
            batches.append(current)
            current, size = [], 0
        current.append(index)
        size += length
    if current:
        batches.append(current)
    return batches


class APIDense:
    """A dense encoder over one provider's embeddings API.

    Vectors are L2-normalised ``float32``; queries and documents are sent with the
    provider's query / document input type where it has one. ``dim`` is learned from the
    first answer (one short probe request if it is read before anything was embedded).

    Args:
        provider: a key of :data:`PROVIDERS`.
        model: the provider's model id.
        api_key: the key.
        base_url: the API root (``https://api.openai.com/v1``); the provider's path is
            appended.
        timeout, max_retries, backoff: see :class:`rag.http.JSONClient`.
        max_tokens: input limit reported to the chunker.

    Raises:
        KeyError: unknown provider.
        APIAuthError: no key.
    """

    def __init__(
        self,
        provider: str,
        model: str,
        api_key: str,
        base_url: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 512,
    ) -> None:
        self.provider = PROVIDERS[provider]
        self.model = model
        self.name = f"{provider}:{model}"
        self.url = base_url.rstrip("/") + self.provider.path
        self.max_tokens = max_tokens
        self.client = JSONClient(
            self.provider.title,
            self.provider.key_setting,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
        )
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """The model's vector dimension."""
        if self._dim is None:
            self._encode([DIMENSION_PROBE], query=False)
        assert self._dim is not None
        return self._dim

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        rows: list[np.ndarray] = []
        for batch in request_batches(texts, self.provider.max_inputs, self.provider.max_tokens):
            batch_texts = [texts[i] for i in batch]
            answer = self.client.post(self.url, self.provider.body(self.model, batch_texts, query))
            rows.append(self._matrix(answer, len(batch_texts)))
        return l2_normalize(np.vstack(rows))

    def _matrix(self, answer: dict, n: int) -> np.ndarray:
        """The ``[n, dim]`` matrix of an answer, checked."""
        try:
            matrix = np.asarray(self.provider.data(answer, n), dtype=np.float32)
        except (ValueError, TypeError) as error:
            raise APIError(f"{self.provider.title}: unexpected answer: {error}") from None
        if matrix.ndim != 2 or matrix.shape[0] != n or not np.isfinite(matrix).all():
            raise APIError(f"{self.provider.title}: the answer is not {n} finite vectors")
        if self._dim is None:
            self._dim = int(matrix.shape[1])
        elif matrix.shape[1] != self._dim:
            raise APIError(
                f"{self.provider.title}: vectors of {matrix.shape[1]} dimensions, expected "
                f"{self._dim}"
            )
        return matrix

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]`` document vectors."""
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]`` query vectors."""
        return self._encode(texts, query=True)
