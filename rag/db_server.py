"""Serve a Milvus Lite db to several processes: `milvus-lite server` (gRPC) on 127.0.0.1.

Milvus Lite lets one process open a db. Served, the db is opened by this server process
only, and every client (the app, `python -m ingest`, `python -m rag search`) reaches it at
``http://HOST:PORT`` (``RAG_MILVUS_URI`` or ``--db``), at the same time.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from rag.store import StoreError, StoreLockedError

DEFAULT_PORT = 19530
DEFAULT_WORKERS = 10  # gRPC threads: requests served at once


def serve(
    on_ready: Callable[[str], None],
    data_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = DEFAULT_WORKERS,
) -> None:
    """Serve the Milvus Lite db ``data_dir`` on ``host:port`` until SIGINT or SIGTERM, then
    drain the requests in flight (up to 5 s) and close the db, which releases its lock.

    ``on_ready`` is called with the URI clients use (``http://HOST:PORT``) once the server
    accepts connections; ``port=0`` picks a free port.

    Raises:
        StoreError: ``data_dir`` is a server URL, or the address cannot be bound.
        StoreLockedError: another process has the db open.
    """
    from milvus_lite.adapter.grpc.server import start_server_in_thread
    from milvus_lite.exceptions import DataDirLockedError

    if "://" in data_dir:
        raise StoreError(f"{data_dir} is a server URL; give the path of a Milvus Lite db")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server, db, bound = start_server_in_thread(data_dir, host, port, workers)
    except DataDirLockedError:
        raise StoreLockedError(
            f"the Milvus Lite db {data_dir} is in use by another process (Milvus Lite allows "
            "one process per db): stop that process (the app, an ingest, a search), then "
            "serve the db"
        ) from None
    except RuntimeError as error:  # grpc: the address cannot be bound
        raise StoreError(f"cannot listen on {host}:{port} (is the port in use?): {error}") from None
    try:
        on_ready(f"http://{host}:{bound}")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(grace=5).wait()
        db.close()
