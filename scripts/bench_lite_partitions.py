"""Does a partition key let Milvus Lite 2.5.1 scan a FLAT field on more than one core?

A FLAT search on the 2.5.1 engine is one single-threaded scan of its one growing segment
(docs/BENCHMARKS.md, "Inside Milvus Lite 2.5.1"). A collection with a partition key keeps
one segment per partition in Milvus proper, searched side by side; this times whether the
Lite engine does the same. Dense field only, unit-length random vectors (a FLAT scan costs
the same whatever the values), exactness checked against numpy::

    LD_LIBRARY_PATH=/tmp/ml25/milvus_lite/lib /tmp/ml25/milvus_lite/lib/milvus \\
        /tmp/parts.db 127.0.0.1:19533 ERROR &
    python scripts/bench_lite_partitions.py --db http://127.0.0.1:19533 --partitions 1 2 4

(Inserts go in pages of 1,000 rows: on 2.5.1 an insert's time grows faster than its size,
0.16 s for 1,000 rows of 384 floats and 20 s for 5,000.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pymilvus import DataType, MilvusClient

DIM = 384
PAGE = 1_000


def build(client: MilvusClient, name: str, vectors: np.ndarray, partitions: int) -> None:
    """A FLAT/IP collection of ``vectors``; a partition key over ``partitions`` when > 1."""
    if client.has_collection(name):
        client.drop_collection(name)
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    if partitions > 1:
        schema.add_field("part", DataType.INT64, is_partition_key=True)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index("dense", index_type="FLAT", metric_type="IP")
    extra = {"num_partitions": partitions} if partitions > 1 else {}
    client.create_collection(name, schema=schema, index_params=index, **extra)
    for start in range(0, len(vectors), PAGE):
        rows = [
            {"id": i, "dense": vectors[i].tolist(), **({"part": i} if partitions > 1 else {})}
            for i in range(start, min(len(vectors), start + PAGE))
        ]
        client.insert(name, rows)
    client.flush(name)
    client.load_collection(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="URL of a Milvus Lite 2.5.1 server")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    client = MilvusClient(args.db)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.rows, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((args.queries + 10, DIM)).astype(np.float32)
    for partitions in args.partitions:
        name = f"parts_{partitions}"
        started = time.perf_counter()
        build(client, name, vectors, partitions)
        built = time.perf_counter() - started
        times, recall = [], []
        for query in queries:
            started = time.perf_counter()
            hits = client.search(name, [query.tolist()], limit=50, anns_field="dense")[0]
            times.append(time.perf_counter() - started)
            exact = set(np.argsort(-(vectors @ query))[:10].tolist())
            recall.append(len(exact & {hit["id"] for hit in hits[:10]}) / 10)
        ms = np.array(times[10:]) * 1000  # the first 10 are warm-up
        print(
            f"partitions {partitions}: built in {built:.0f} s, search p50 "
            f"{np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, "
            f"recall@10 {np.mean(recall):.3f}",
            flush=True,
        )
        client.drop_collection(name)


if __name__ == "__main__":
    main()
