"""Connect to Milvus: a Milvus Lite db path (the engine in ``lite``) or a server URL."""

from __future__ import annotations

import logging

from pymilvus import MilvusClient

from rag.store import lite
from rag.store.errors import StoreError, StoreLockedError

# pymilvus logs every failed RPC with a traceback at ERROR, and iterator notes at WARNING;
# the store turns failures into exceptions with a clear message instead.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


def connect(uri: str, token: str | None = None) -> MilvusClient:
    """A ``MilvusClient`` for a Lite db path (``*.db``) or a server URL.

    Raises:
        StoreLockedError: the Lite db is open in another process.
        StoreError: the server cannot be reached, or the db cannot be opened (a path the
            engine refuses, or a db written by the other Milvus Lite engine; see
            ``rag.store.lite.Engine.check_db``).
    """
    path = lite.lite_path(uri)
    if path is not None:
        try:
            lite.engine().prepare(path, uri)
        except lite.LiteLockedError as error:
            raise StoreLockedError(str(error)) from None
        except lite.LiteError as error:
            raise StoreError(str(error)) from None
    try:
        client = MilvusClient(uri=uri if path is None else str(path), token=token or "")
    except Exception as error:  # noqa: BLE001 - pymilvus raises several unrelated types here
        raise StoreError(f"cannot open Milvus at {uri}: {error}") from None
    if path is not None:
        lite.open_clients[str(path)] += 1
    return client


def disconnect(client: MilvusClient, uri: str) -> None:
    """Close ``client``; the last client of a Lite db also stops its engine and lock."""
    client.close()
    path = lite.lite_path(uri)
    if path is not None and lite.open_clients[str(path)] > 0:
        lite.open_clients[str(path)] -= 1
        if lite.open_clients[str(path)] == 0:
            lite.release(path)
