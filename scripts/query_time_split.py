"""Where a query's time goes: each encoder, hybrid_search, and the dense and sparse searches.

`python -m rag.bench query` times embed + search as one number; this script times the
parts over the same SciFact claims, one query at a time on one thread (each part in a pass
of its own over all queries, the first 10 of each pass not counted), against any
collection built with the default profile:

    python scripts/query_time_split.py --db http://127.0.0.1:19532 --collection bench_100000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from pymilvus import AnnSearchRequest, RRFRanker

from rag.retriever import Retriever
from rag.settings import Settings
from rag.store import DENSE_FIELD, SPARSE_FIELD, sparse_to_milvus

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("-n", type=int, default=300, help="queries timed")
    parser.add_argument("--candidates", type=int, default=50, help="hits per search")
    args = parser.parse_args()

    settings = Settings(milvus_uri=args.db, collection=args.collection, query_threads=1)
    retriever = Retriever.from_settings(settings)
    store, embedder = retriever.store, retriever.embedder
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for line in handle][: args.n + 10]
    parts: dict[str, list[float]] = {}

    def timed(name, call, *call_args):
        started = time.perf_counter()
        result = call(*call_args)
        parts.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return result

    encoded = []
    for query in queries:
        dense = timed("encode dense", embedder.dense.encode_queries, [query])[0]
        sparse = sparse_to_milvus(timed("encode sparse", embedder.sparse.encode_queries, [query]))
        encoded.append((dense, sparse))
    for dense, sparse in encoded:  # each search in a pass of its own
        requests = [
            AnnSearchRequest([dense], DENSE_FIELD, store.dense_search_params, args.candidates),
            AnnSearchRequest(sparse, SPARSE_FIELD, {"metric_type": "IP"}, args.candidates),
        ]
        timed("hybrid_search", store.hybrid_search, requests, RRFRanker(60), 10)
    for dense, _ in encoded:
        timed("dense search", store.search, DENSE_FIELD, [dense], args.candidates)
    for _, sparse in encoded:
        timed("sparse search", store.search, SPARSE_FIELD, sparse, args.candidates)
    store.close()
    for name, samples in parts.items():
        kept = sorted(samples[10:])
        p95 = kept[int(0.95 * (len(kept) - 1))]
        print(f"{name:14s} p50 {statistics.median(kept):6.1f} ms   p95 {p95:6.1f} ms")


if __name__ == "__main__":
    main()
