"""Serve a Milvus Lite db to several processes on a port (``python -m rag serve-db``).

Milvus Lite lets one process open a db. Served, the db is opened by this server process
only, and every client (the app, ``python -m ingest``, ``python -m rag search``) reaches it at
``http://HOST:PORT`` (``RAG_MILVUS_URI`` or ``--db``), at the same time. The engine is the
installed Milvus Lite's (``rag.store.lite``): the 2.5 C++ engine listening on the port, or
3.x's gRPC server.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from rag.store import StoreError, StoreLockedError, lite

DEFAULT_PORT = 19530
DEFAULT_WORKERS = 10  # gRPC threads of the 3.x server: requests served at once


def serve(
    on_ready: Callable[[str], None],
    data_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = DEFAULT_WORKERS,
) -> None:
    """Serve the Milvus Lite db ``data_dir`` on ``host:port`` until SIGINT or SIGTERM, then
    let the engine finish the requests in flight and close the db, which releases its lock.

    ``on_ready`` is called with the URI clients use (``http://HOST:PORT``) once the server
    accepts connections; ``port=0`` picks a free port.

    Raises:
        StoreError: ``data_dir`` is a server URL or a db the engine cannot open, or the
            address cannot be bound.
        StoreLockedError: another process has the db open.
    """
    db = lite.lite_path(data_dir)
    if db is None:
        raise StoreError(f"{data_dir} is a server URL; give the path of a Milvus Lite db")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        lite.serve(on_ready, stop, db, host, port, workers)
    except lite.LiteLockedError as error:
        raise StoreLockedError(str(error)) from None
    except lite.LiteError as error:
        raise StoreError(str(error)) from None
