"""Reranking through the Jina AI Reranker API (``POST {base_url}/rerank``), with retries."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from pydantic import SecretStr

from rag.http import APIError, JSONClient
from rag.rerankers.base import RerankError, ScoringReranker

DEFAULT_MODEL = "jina-reranker-v1-base-en"
DEFAULT_BASE_URL = "https://api.jina.ai/v1"
PROVIDER = "Jina AI"
KEY_SETTING = "RAG_JINA_API_KEY"


class JinaReranker(ScoringReranker):
    """Scores passages with a Jina reranker model through the Jina Reranker API.

    Request ``{"model", "query", "documents", "top_n", "return_documents": false}`` with
    ``Authorization: Bearer <key>``; response ``{"results": [{"index", "relevance_score"},
    ...]}`` (Jina's rerank API, https://jina.ai/reranker, as pymilvus's
    ``JinaRerankFunction`` calls it; ``return_documents: false`` drops the echoed texts).
    All documents are scored (``top_n`` = their number); the cut to ``top_k`` is local.

    Requests go through :class:`rag.http.JSONClient`: a timeout, a connection error, HTTP 429
    or 5xx is retried up to ``max_retries`` times, waiting ``backoff * 2**attempt`` seconds,
    or the response's ``Retry-After``; either wait is capped at ``max_backoff``. Its errors
    become :class:`RerankError`; the key never appears in an error message.

    Args:
        api_key: the Jina API key.
        model: a Jina reranker model (``jina-reranker-v1-base-en``,
            ``jina-reranker-v2-base-multilingual``, ...).
        base_url: the API root; ``/rerank`` is appended.
        timeout: seconds per request (connect, read, write, pool).
        max_retries: further attempts after the first fails with a retryable failure.
        backoff: first wait in seconds; each retry doubles it.
        max_backoff: longest wait in seconds.
        sleep: how to wait (``time.sleep``).

    Raises:
        RerankError: no API key.
        ValueError: ``max_retries < 0``.
    """

    name = "jina"

    def __init__(
        self,
        api_key: str | SecretStr | None,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key or ""
        try:
            self._client = JSONClient(
                PROVIDER,
                KEY_SETTING,
                key,
                timeout=timeout,
                max_retries=max_retries,
                backoff=backoff,
                max_backoff=max_backoff,
                sleep=sleep,
            )
        except APIError as error:  # no key: the message names KEY_SETTING
            raise RerankError(str(error)) from None
        self.model_name = model
        self.url = f"{base_url.rstrip('/')}/rerank"

    @property
    def timeout(self) -> float:
        """Seconds per request."""
        return self._client.timeout

    @property
    def max_retries(self) -> int:
        """Further attempts after a retryable failure."""
        return self._client.max_retries

    @property
    def backoff(self) -> float:
        """First wait in seconds."""
        return self._client.backoff

    @property
    def max_backoff(self) -> float:
        """Longest wait in seconds."""
        return self._client.max_backoff

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """Jina's ``relevance_score`` per passage: ``float32 [n]``.

        Raises:
            RerankError: HTTP 401/403 (the key), another 4xx, retries exhausted, or a
                response that does not score every passage exactly once.
        """
        body = {
            "model": self.model_name,
            "query": query,
            "documents": passages,
            "top_n": len(passages),
            "return_documents": False,
        }
        try:
            payload = self._client.post(self.url, body)
        except APIError as error:  # APIAuthError (401/403) names KEY_SETTING
            raise RerankError(str(error)) from None
        return self._scores(payload, len(passages))

    @staticmethod
    def _scores(payload: object, n: int) -> np.ndarray:
        """``relevance_score`` by ``index`` from a response that scores each of ``n`` passages
        exactly once."""
        results = payload.get("results") if isinstance(payload, dict) else None
        if not isinstance(results, list):
            raise RerankError("Jina's response has no 'results' list")
        scores = np.full(n, np.nan, np.float32)
        for item in results:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get("relevance_score") if isinstance(item, dict) else None
            valid_index = isinstance(index, int) and not isinstance(index, bool) and 0 <= index < n
            valid_score = isinstance(score, int | float) and not isinstance(score, bool)
            if not (valid_index and valid_score and math.isfinite(score)):
                raise RerankError(f"Jina's response has an invalid result: {item!r:.200}")
            if not np.isnan(scores[index]):
                raise RerankError(f"Jina's response scores document {index} twice")
            scores[index] = score
        missing = int(np.isnan(scores).sum())
        if missing:
            raise RerankError(f"Jina's response leaves {missing} of {n} documents unscored")
        return scores
