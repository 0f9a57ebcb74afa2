"""Load test of server mode: concurrent clients querying one Milvus Lite db served by
`python -m rag serve-db`.

    python scripts/load_test.py --db data/milvus.db                   # serves it, 8 × 200
    python scripts/load_test.py --uri http://127.0.0.1:19530 --clients 4 --queries 50

Each client is a process of its own, like a user's app or CLI: it opens the collection with
``Retriever.from_settings`` (the embedder the collection records, one torch thread), warms
up with one query, waits for the others, then runs its queries one after another through
``Retriever.search`` as the app does (query embedding, the dense and sparse searches fused
by the default fusion, and each list's ranks for the stage ranks). The queries are
questions about the Milvus documentation, each client starting at another one. The report
gives the errors, latency percentiles over every query, and the throughput from the start
signal to the last answer.
Exit code 1 when any query failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 1800  # seconds for every client to load its models on a busy machine
QUESTIONS = [
    "How do I create a sparse vector index?",
    "What does efConstruction control in HNSW?",
    "How does IVF_PQ compress vectors?",
    "What is the difference between FLAT and IVF_FLAT?",
    "How do I run a hybrid search with RRFRanker?",
    "What metric types can a dense vector field use?",
    "How do I load a collection into memory?",
    "How does full text search with BM25 work in Milvus?",
    "What is a partition key?",
    "How do I filter search results with a boolean expression?",
    "How do I upsert entities into a collection?",
    "What is the maximum dimension of a float vector?",
    "How do I connect to Milvus Lite from Python?",
    "What does the nprobe search parameter do?",
    "How can I delete entities by primary key?",
    "How do I enable dynamic fields in a schema?",
    "What is range search and when should I use it?",
    "How does grouping search work?",
    "What consistency levels does Milvus support?",
    "How do I back up a Milvus collection?",
    "What is the SCANN index?",
    "How do I use a JSON field in filters?",
    "What is the role of the query node?",
    "How do I configure an analyzer for a VARCHAR field?",
    "What are binary vectors used for?",
    "How do I drop an index?",
    "What is mmap in Milvus and when does it help?",
    "How do I set a TTL on a collection?",
    "Which embedding functions does pymilvus provide?",
    "How do I rerank search results with a cross-encoder?",
    "What is the DISKANN index?",
    "How do I list all collections?",
    "How is a sparse vector represented in pymilvus?",
    "What does the radius parameter mean in range search?",
    "How do I create a collection with a custom schema?",
    "How do I monitor Milvus with Prometheus and Grafana?",
    "What is the difference between a segment and a partition?",
    "How do I use the query iterator?",
    "What is multi-vector search?",
    "How do I enable authentication and create users?",
]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (linear interpolation), 0.0 for none."""
    return float(np.percentile(values, q)) if values else 0.0


def client(index: int, uri: str, collection: str, queries: int, start, results) -> None:
    """One client process: open the collection, warm up, wait for ``start``, then run
    ``queries`` searches; puts ``{"client", "latencies_ms", "errors", "end"}`` on ``results``
    (``errors`` as ``"Type: message"``; a client that cannot open the collection reports
    that as its one error)."""
    from rag.retriever import Retriever
    from rag.settings import Settings

    report: dict = {"client": index, "latencies_ms": [], "errors": [], "end": 0.0}
    try:
        retriever = Retriever.from_settings(
            Settings(_env_file=None, milvus_uri=uri, collection=collection, num_threads=1)
        )
        retriever.search(QUESTIONS[index % len(QUESTIONS)])
    except Exception as error:  # noqa: BLE001 - reported, the run goes on
        report["errors"].append(f"{type(error).__name__}: {error}")
        start.wait(STARTUP_TIMEOUT)
        results.put(report)
        return
    start.wait(STARTUP_TIMEOUT)
    for n in range(queries):
        question = QUESTIONS[(index + n) % len(QUESTIONS)]
        began = time.perf_counter()
        try:
            retriever.search(question, top_k=10)
        except Exception as error:  # noqa: BLE001 - counted, the client goes on
            report["errors"].append(f"{type(error).__name__}: {error}")
            continue
        report["latencies_ms"].append((time.perf_counter() - began) * 1000)
    report["end"] = time.time()
    retriever.store.close()
    results.put(report)


def run(uri: str, collection: str, clients: int, queries: int) -> dict:
    """Run ``clients`` client processes of ``queries`` searches each against ``uri``; the
    summary: counts, errors, latency percentiles (ms) and throughput (queries/s).

    Raises:
        RuntimeError: a client process died, or the clients did not all start in time.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(clients + 1)
    results = context.Queue()
    processes = [
        context.Process(target=client, args=(i, uri, collection, queries, start, results))
        for i in range(clients)
    ]
    for process in processes:
        process.start()
    try:
        start.wait(STARTUP_TIMEOUT)  # every client is warmed up
    except threading.BrokenBarrierError:
        raise RuntimeError("the clients did not all start; see their output above") from None
    began = time.time()
    reports: list[dict] = []
    while len(reports) < clients:
        try:
            reports.append(results.get(timeout=5))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in processes):
                raise RuntimeError("a client process died; see its output above") from None
    for process in processes:
        process.join()
    latencies = [ms for report in reports for ms in report["latencies_ms"]]
    errors = [error for report in reports for error in report["errors"]]
    wall = max([report["end"] for report in reports] + [began]) - began
    return {
        "uri": uri,
        "collection": collection,
        "clients": clients,
        "queries_per_client": queries,
        "queries": len(latencies) + len(errors),
        "ok": len(latencies),
        "errors": len(errors),
        "error_messages": sorted(set(errors))[:10],
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies, default=0.0), 1),
        "wall_s": round(wall, 1),
        "queries_per_s": round(len(latencies) / wall, 2) if wall > 0 else 0.0,
    }


def serve(db: str, log: Path) -> tuple[subprocess.Popen, str]:
    """Start `python -m rag serve-db` on ``db`` and a free port; ``(process, uri)``.

    Raises:
        RuntimeError: the server did not start (its output is in ``log``).
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "rag", "serve-db", "--db", db, "--port", "0"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=output,
            text=True,
        )
    match = re.search(r" on (http://\S+) ", process.stdout.readline())
    if match is None:
        process.wait()
        raise RuntimeError(f"serve-db did not start: {log.read_text()[-1000:]}")
    return process, match.group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="a Milvus Lite db to serve for the run (serve-db)")
    where.add_argument("--uri", help="a running server, e.g. http://127.0.0.1:19530")
    parser.add_argument("--collection", default="docs")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--queries", type=int, default=200, help="queries per client")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    server = None
    uri = args.uri
    if args.db:
        server, uri = serve(args.db, Path(tempfile.mkdtemp()) / "serve-db.log")
    try:
        summary = run(uri, args.collection, args.clients, args.queries)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['clients']} clients × {summary['queries_per_client']} queries on "
            f"{summary['collection']} @ {summary['uri']}: {summary['ok']} ok, "
            f"{summary['errors']} errors · p50 {summary['p50_ms']} ms · p95 "
            f"{summary['p95_ms']} ms · p99 {summary['p99_ms']} ms · max {summary['max_ms']} ms"
            f" · {summary['queries_per_s']} queries/s over {summary['wall_s']} s"
        )
        for message in summary["error_messages"]:
            print(f"error: {message}")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
