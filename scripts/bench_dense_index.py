"""Dense index choice, measured: FLAT vs HNSW latency and recall@10 on a real collection.

Usage: python scripts/bench_dense_index.py [DB] [COLLECTION] [N_QUERIES]
Copies the dense vectors of COLLECTION (default: data/milvus.db, docs) into two temporary
collections, one per index type, and searches both with N stored vectors as queries.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import numpy as np
from pymilvus import DataType, MilvusClient

from rag.store import connect, disconnect


def main(db: str = "data/milvus.db", collection: str = "docs", n_queries: int = 300) -> None:
    source = connect(db)
    source.load_collection(collection)
    iterator = source.query_iterator(collection, batch_size=1000, filter="",
                                     output_fields=["id", "dense"])
    vectors = []
    while batch := iterator.next():
        vectors.extend(np.asarray(row["dense"], np.float32) for row in batch)
    iterator.close()
    disconnect(source, db)
    matrix = np.stack(vectors)
    queries = matrix[np.random.default_rng(0).choice(len(matrix), n_queries, replace=False)]
    print(f"{len(matrix)} vectors of dim {matrix.shape[1]}, {n_queries} queries")

    with tempfile.TemporaryDirectory() as folder:
        uri = f"{folder}/bench.db"
        client = connect(uri)
        results = {}
        for index_type, params in (("FLAT", {}), ("HNSW", {"M": 16, "efConstruction": 200})):
            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=matrix.shape[1])
            index = client.prepare_index_params()
            index.add_index("dense", index_type=index_type, metric_type="IP", params=params)
            client.create_collection(index_type, schema=schema, index_params=index)
            for start in range(0, len(matrix), 1000):
                client.insert(index_type, [{"id": start + i, "dense": v}
                                           for i, v in enumerate(matrix[start:start + 1000])])
            client.flush(index_type)  # seal segments so the index is built, as after an ingest
            client.load_collection(index_type)
            client.search(index_type, data=[queries[0]], anns_field="dense", limit=10)
            latencies, ids = [], []
            for query in queries:
                started = time.perf_counter()
                hits = client.search(index_type, data=[query], anns_field="dense", limit=10)
                latencies.append((time.perf_counter() - started) * 1000)
                ids.append({hit["id"] for hit in hits[0]})
            results[index_type] = ids
            latencies.sort()
            print(f"{index_type}: p50 {statistics.median(latencies):.2f} ms, "
                  f"p95 {latencies[int(0.95 * len(latencies))]:.2f} ms")
        recall = np.mean([len(h & f) / 10 for h, f in zip(results["HNSW"], results["FLAT"],
                                                            strict=True)])
        print(f"HNSW recall@10 against FLAT: {recall:.4f}")
        disconnect(client, uri)


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
