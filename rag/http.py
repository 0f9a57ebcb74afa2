"""JSON over HTTP for provider APIs (embeddings, reranking): timeouts, retries with backoff,
errors naming the provider."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

# Failures worth another attempt: the same request may succeed later.
RETRYABLE_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class APIError(RuntimeError):
    """A provider API failed; the message names the provider and never holds the key."""


class APIAuthError(APIError):
    """The provider refused the API key (HTTP 401 or 403)."""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date, RFC 9110
    §10.2.3), at least 0; ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass
class JSONClient:
    """POSTs JSON to one provider with a bearer key.

    A timeout, a connection error, HTTP 429 or 5xx is retried up to ``max_retries`` times,
    waiting ``backoff * 2**attempt`` seconds or, when the response says so, its
    ``Retry-After``; each wait is capped at ``max_backoff``. HTTP 401/403 raises
    :class:`APIAuthError` at once, another 4xx :class:`APIError` with the start of the body.
    The key is sent only in the ``Authorization`` header and is cut out of every message.

    Attributes:
        provider: the provider's name, as messages show it (``"OpenAI"``, ``"Jina AI"``).
        key_setting: the environment variable holding the key (``"RAG_OPENAI_API_KEY"``).
        api_key: the key; sent as ``Authorization: Bearer <key>``.
        timeout: seconds per request (connect, read, write, pool).
        max_retries: further attempts after a retryable failure, ``>= 0``.
        backoff: first wait in seconds.
        max_backoff: longest wait in seconds.
        sleep: how to wait (``time.sleep``; tests pass a recorder).

    Raises:
        ValueError: ``max_retries < 0``.
        APIAuthError: no API key.
    """

    provider: str
    key_setting: str
    api_key: str
    timeout: float = 30.0
    max_retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not self.api_key.strip():
            raise APIAuthError(f"{self.provider}: no API key; set {self.key_setting}")
        self._client = httpx.Client(timeout=self.timeout)

    def post(self, url: str, body: dict) -> dict:
        """The decoded JSON object answering a POST of ``body`` to ``url``.

        Raises:
            APIAuthError: HTTP 401 or 403.
            APIError: another 4xx, a body that is not a JSON object, or every attempt failed.
        """
        headers = {"Authorization": f"Bearer {self.api_key}"}
        attempts = self.max_retries + 1
        failure = ""
        for attempt in range(attempts):
            wait = min(self.max_backoff, self.backoff * 2**attempt)
            try:
                response = self._client.post(url, json=body, headers=headers)
            except RETRYABLE_EXCEPTIONS as error:
                failure = self._redact(f"{type(error).__name__}: {error}")
            except httpx.HTTPError as error:
                raise APIError(self._redact(f"{self.provider}: POST {url}: {error}")) from None
            else:
                if response.is_success:
                    return self._json(response, url)
                failure = f"HTTP {response.status_code}"
                self._raise_unless_retryable(response, url)
                after = retry_after_seconds(response.headers.get("Retry-After"))
                if after is not None:
                    wait = min(self.max_backoff, after)
            if attempt + 1 < attempts:
                self.sleep(wait)
        raise APIError(
            self._redact(f"{self.provider}: POST {url} failed {attempts} times; last: {failure}")
        )

    def _redact(self, text: str) -> str:
        return text.replace(self.api_key, "***")

    def _raise_unless_retryable(self, response: httpx.Response, url: str) -> None:
        status = response.status_code
        if status in (401, 403):
            raise APIAuthError(
                self._redact(
                    f"{self.provider} refused the API key (HTTP {status} from {url}): check "
                    f"{self.key_setting}"
                )
            )
        if status != 429 and status < 500:
            detail = self._redact(" ".join(response.text[:300].split()))
            raise APIError(f"{self.provider} rejected the request (HTTP {status}): {detail}")

    def _json(self, response: httpx.Response, url: str) -> dict:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise APIError(
                self._redact(f"{self.provider}: {url} answered with a body that is not JSON")
            )
        return payload
