"""Compare Milvus Lite releases on the project's hybrid-search schema: insert and query latency.

Builds a fresh collection with the schema of ``rag.store.MilvusStore._create`` (VARCHAR pk,
text fields, ``lexical_text`` with analyzer -> BM25 function -> ``bm25``, FLAT/IP ``dense``,
SPARSE_INVERTED_INDEX/IP ``sparse``, INVERTED scalar indexes on ``source``/``file_hash``),
inserts exported chunk rows (optionally N copies with distinct ids, to see scaling), then
times single queries: hybrid (dense + sparse requests, RRFRanker(60)), dense alone, sparse
alone, and BM25 full-text search. The four operations are interleaved query by query, so
they see the same machine load.

Inputs, made once with the project venv and milvus-lite 3.x (copy the db first if it is
open elsewhere)::

    mkdir -p /tmp/ml_bench && cp -r data/milvus.db /tmp/ml_bench/src.db
    .venv/bin/python scripts/bench_milvus_lite_versions.py --export /tmp/ml_bench/src.db

They are ``rows.pkl`` = list of row dicts (id, text, lexical_text, source, title, heading,
chunk_index, page, file_hash, dense [384 floats], sparse {int: float}; no ``bm25``) and
``queries.pkl`` = {"text": [...], "dense": [[...]], "sparse": [{int: float}]}.

Run with the project's milvus-lite (3.x, pure Python, in-process)::

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python scripts/bench_milvus_lite_versions.py \
        --rows /tmp/ml_bench/rows.pkl --queries /tmp/ml_bench/queries.pkl \
        --db /tmp/ml_bench/v3_c1.db --copies 1 --dump-ids /tmp/ml_bench/ids_v3_c1.json

Run with milvus-lite 2.5.1 (C++ ``milvus`` subprocess), installed outside the venv::

    .venv/bin/pip install --no-deps --target /tmp/ml25 milvus-lite==2.5.1 "setuptools<81"
    PYTHONPATH=/tmp/ml25 OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python \
        scripts/bench_milvus_lite_versions.py --rows /tmp/ml_bench/rows.pkl \
        --queries /tmp/ml_bench/queries.pkl --db /tmp/ml_bench/v25_c1.db --copies 1 \
        --dump-ids /tmp/ml_bench/ids_v25_c1.json

(2.5.1 imports ``pkg_resources``, hence setuptools<81; its other dependency, tqdm, is in the
venv.) Compare two ``--dump-ids`` files with ``--compare A.json B.json``.

``--copies N`` inserts the rows N times with ids ``c{k}-{id}``: duplicated text and vectors,
acceptable ONLY for this engine-vs-engine latency comparison (top-k hits contain duplicates,
so the ids are not a meaningful retrieval result, and BM25 statistics are those of a
corpus of duplicates).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np

OPS = ("hybrid", "dense", "sparse", "bm25")
COLLECTION = "docs"


def engine_version() -> str:
    import milvus_lite

    return f"milvus_lite {getattr(milvus_lite, '__version__', '?')} from {milvus_lite.__file__}"


def build_schema(client, dim: int):
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=65_535)
    schema.add_field("lexical_text", DataType.VARCHAR, max_length=65_535, enable_analyzer=True)
    schema.add_field("source", DataType.VARCHAR, max_length=2_048)
    schema.add_field("title", DataType.VARCHAR, max_length=1_024)
    schema.add_field("heading", DataType.VARCHAR, max_length=2_048)
    schema.add_field("chunk_index", DataType.INT32)
    schema.add_field("page", DataType.INT32)
    schema.add_field("file_hash", DataType.VARCHAR, max_length=64)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="text_bm25",
            function_type=FunctionType.BM25,
            input_field_names=["lexical_text"],
            output_field_names=["bm25"],
        )
    )
    return schema


# IVF_FLAT as the product builds it (rag.store.DENSE_INDEXES); session 4's 95k row used
# nlist 128 / nprobe 16.
DENSE_INDEX_PARAMS = {
    "FLAT": {},
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 1024},
}
DENSE_SEARCH_PARAMS = {"FLAT": {}, "HNSW": {"ef": 64}, "IVF_FLAT": {"nprobe": 32}}


def index_params(client, scalar: bool, dense_index: str = "FLAT"):
    index = client.prepare_index_params()
    index.add_index(
        "dense", index_type=dense_index, metric_type="IP", params=DENSE_INDEX_PARAMS[dense_index]
    )
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    index.add_index("bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    if scalar:
        for field in ("source", "file_hash"):
            index.add_index(field, index_type="INVERTED")
    return index


def pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return f"p50 {p50:7.2f}  p95 {p95:7.2f}  p99 {p99:7.2f}  mean {np.mean(values):7.2f} ms"


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def compare(a_path: str, b_path: str) -> None:
    a, b = json.load(open(a_path)), json.load(open(b_path))
    print(f"A = {a['engine']}\nB = {b['engine']}")
    for op in OPS:
        qa, qb = a["ids"].get(op), b["ids"].get(op)
        if not qa or not qb:
            print(f"{op:7s}: missing in {'A' if not qa else 'B'}")
            continue
        n = min(len(qa), len(qb))
        same_order = sum(qa[i] == qb[i] for i in range(n))
        same_set = sum(set(qa[i]) == set(qb[i]) for i in range(n))
        overlap = np.mean([len(set(qa[i]) & set(qb[i])) / max(1, len(qa[i])) for i in range(n)])
        top1 = sum(bool(qa[i]) and bool(qb[i]) and qa[i][0] == qb[i][0] for i in range(n))
        print(
            f"{op:7s}: {n} queries; identical order {same_order}/{n}, identical set "
            f"{same_set}/{n}, same top-1 {top1}/{n}, mean overlap@10 {overlap:.3f}"
        )
        for i in range(n):
            if qa[i] != qb[i] and set(qa[i]) == set(qb[i]):
                sa, sb = a["scores"][op][i], b["scores"][op][i]
                print(f"    q{i} order differs; scores A {sa[:10]}\n{'':18s}B {sb[:10]}")
                break
        for i in range(n):
            if set(qa[i]) != set(qb[i]):
                sa, sb = a["scores"][op][i], b["scores"][op][i]
                print(f"    q{i} set differs; scores A {sa[:10]}\n{'':16s}B {sb[:10]}")
                break


def export(source_db: str, collection: str, rows_path: str, queries_path: str) -> None:
    """Write the collection's rows (no ``bm25``: Milvus recomputes it) and 300 SciFact
    claims encoded by the default profile, with the project's milvus-lite (3.x). Copy a db
    that another process has open first (Milvus Lite allows one process per db)."""
    from pymilvus import MilvusClient

    from rag.embedders import build_embedder
    from rag.settings import Settings
    from rag.store import sparse_to_milvus

    client = MilvusClient(source_db)
    client.load_collection(collection)
    pages = client.query_iterator(collection, batch_size=1000, filter="", output_fields=["*"])
    rows = []
    while page := pages.next():
        for row in page:
            row = dict(row)
            row.pop("bm25", None)
            row["dense"] = [float(x) for x in row["dense"]]
            row["sparse"] = {int(k): float(v) for k, v in dict(row["sparse"]).items()}
            rows.append(row)
    pages.close()
    client.close()
    with open(rows_path, "wb") as handle:
        pickle.dump(rows, handle)
    scifact = Path(__file__).resolve().parents[2] / "shared/data/beir/scifact/queries.jsonl"
    with scifact.open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle][:300]
    vectors = build_embedder(Settings(num_threads=1)).encode_queries(texts)
    queries = {
        "text": texts,
        "dense": [list(map(float, v)) for v in vectors.dense],
        "sparse": sparse_to_milvus(vectors.sparse),
    }
    with open(queries_path, "wb") as handle:
        pickle.dump(queries, handle)
    print(f"exported {len(rows)} rows and {len(texts)} queries")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="/tmp/ml_bench/rows.pkl")
    ap.add_argument("--queries", default="/tmp/ml_bench/queries.pkl")
    ap.add_argument("--db", help="a fresh Milvus Lite db path (a *.db folder/file to create)")
    ap.add_argument("--overwrite", action="store_true", help="delete --db first if it exists")
    ap.add_argument("--copies", type=int, default=1, help="insert the rows N times (ids c{k}-)")
    ap.add_argument("--n-queries", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument(
        "--dense-index", default="FLAT", choices=sorted(DENSE_INDEX_PARAMS),
        help="dense index (the project's default is FLAT; store.py also offers HNSW M16/efC200)",
    )  # fmt: skip
    ap.add_argument("--ops", default=",".join(OPS), help="comma list of " + ",".join(OPS))
    ap.add_argument("--dump-ids", help="write the top-k ids/scores of the first --n-dump queries")
    ap.add_argument("--n-dump", type=int, default=20)
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two --dump-ids files")
    ap.add_argument("--export", metavar="SOURCE_DB", help="write --rows and --queries from a db")
    ap.add_argument("--collection", default="docs", help="the collection --export reads")
    args = ap.parse_args()

    if args.export:
        export(args.export, args.collection, args.rows, args.queries)
        return 0

    if args.compare:
        compare(*args.compare)
        return 0
    if not args.db:
        ap.error("--db is required")

    from pymilvus import AnnSearchRequest, MilvusClient, RRFRanker

    print(engine_version())
    import pymilvus

    print(f"pymilvus {pymilvus.__version__}; python {sys.version.split()[0]}; pid {os.getpid()}")
    print(loadavg())
    if args.copies > 1:
        print(
            f"NOTE: --copies {args.copies}: every row inserted {args.copies} times with distinct"
            " ids (duplicated text/vectors): valid only for this engine latency comparison."
        )
    errors: list[str] = []

    rows = pickle.load(open(args.rows, "rb"))
    queries = pickle.load(open(args.queries, "rb"))
    n_q = min(args.n_queries, len(queries["text"]))
    dim = len(rows[0]["dense"])
    fields = ["id", "text", "lexical_text", "source", "title", "heading", "chunk_index", "page",
              "file_hash", "dense", "sparse"]  # fmt: skip

    if os.path.exists(args.db):
        if not args.overwrite:
            ap.error(f"{args.db} exists (use --overwrite)")
        shutil.rmtree(args.db) if os.path.isdir(args.db) else os.remove(args.db)

    t0 = time.perf_counter()
    client = MilvusClient(args.db)
    print(f"open {time.perf_counter() - t0:.2f}s")
    schema = build_schema(client, dim)
    try:
        client.create_collection(
            COLLECTION, schema=schema, index_params=index_params(client, True, args.dense_index)
        )
    except Exception as exc:  # noqa: BLE001
        msg = f"create_collection with INVERTED scalar indexes failed: {exc!r}; retrying without"
        print("ERROR:", msg)
        errors.append(msg)
        if client.has_collection(COLLECTION):
            client.drop_collection(COLLECTION)
        client.create_collection(
            COLLECTION, schema=schema, index_params=index_params(client, False, args.dense_index)
        )
    print("indexes:", client.list_indexes(COLLECTION))
    print("dense index:", client.describe_index(COLLECTION, "dense"))

    # ---- insert
    t0 = time.perf_counter()
    n_ins = 0
    for k in range(args.copies):
        prefix = f"c{k}-" if args.copies > 1 else ""
        for start in range(0, len(rows), args.batch):
            batch = []
            for r in rows[start : start + args.batch]:
                row = {f: r[f] for f in fields}
                row["id"] = prefix + r["id"]
                batch.append(row)
            client.insert(COLLECTION, batch)
            n_ins += len(batch)
    t_insert = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.flush(COLLECTION)
    t_flush = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.load_collection(COLLECTION)
    t_load = time.perf_counter() - t0
    count = client.query(
        COLLECTION, filter="", output_fields=["count(*)"], consistency_level="Strong"
    )[0]["count(*)"]
    print(
        f"inserted {n_ins} rows ({args.copies} x {len(rows)}) in {t_insert:.1f}s "
        f"({n_ins / t_insert:.0f} rows/s); flush {t_flush:.1f}s; load {t_load:.1f}s; "
        f"count(*) {count}"
    )

    # ---- operations
    out = ["text", "source"]
    lim = args.limit

    def op_hybrid(i):
        reqs = [
            AnnSearchRequest([queries["dense"][i]], "dense", dense_params, lim),
            AnnSearchRequest([queries["sparse"][i]], "sparse", {"metric_type": "IP"}, lim),
        ]
        return client.hybrid_search(COLLECTION, reqs, RRFRanker(60), limit=lim, output_fields=out)

    dense_params = {"metric_type": "IP", "params": DENSE_SEARCH_PARAMS[args.dense_index]}

    def op_search(field, data, metric):
        params = dense_params if field == "dense" else {"metric_type": metric}
        return client.search(
            COLLECTION, data=[data], anns_field=field, limit=lim,
            search_params=params, output_fields=out,
        )  # fmt: skip

    funcs = {
        "hybrid": op_hybrid,
        "dense": lambda i: op_search("dense", queries["dense"][i], "IP"),
        "sparse": lambda i: op_search("sparse", queries["sparse"][i], "IP"),
        "bm25": lambda i: op_search("bm25", queries["text"][i], "BM25"),
    }
    ops = [o for o in args.ops.split(",") if o]
    live = []
    for op in ops:  # one trial call: report and skip unsupported operations
        try:
            res = funcs[op](0)
            assert len(res[0]) > 0, "no hits"
            live.append(op)
        except Exception as exc:  # noqa: BLE001
            msg = f"{op}: {type(exc).__name__}: {exc}"
            print("ERROR:", msg)
            traceback.print_exc(limit=2)
            errors.append(msg)
    for i in range(1, 1 + args.warmup):
        for op in live:
            funcs[op](i % n_q)

    times = {op: [] for op in live}
    dump = {op: [] for op in live}
    scores = {op: [] for op in live}
    print("timing:", loadavg())
    t_all = time.perf_counter()
    for i in range(n_q):
        for op in live:
            t0 = time.perf_counter()
            res = funcs[op](i)
            times[op].append((time.perf_counter() - t0) * 1e3)
            if i < args.n_dump:
                dump[op].append([h["id"] for h in res[0]])
                scores[op].append([round(float(h["distance"]), 5) for h in res[0]])
    print(
        f"timed {n_q} queries x {len(live)} ops in {time.perf_counter() - t_all:.1f}s; {loadavg()}"
    )
    for op in live:
        print(f"  {op:7s} {pct(times[op])}")
    client.close()
    try:
        size = sum(
            os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.db) for f in fs
        ) if os.path.isdir(args.db) else os.path.getsize(args.db)  # fmt: skip
        print(f"db size on disk: {size / 2**20:.1f} MiB ({args.db})")
    except OSError as exc:
        print("db size: ?", exc)
    print("errors:", errors or "none")
    summary = {
        "engine": engine_version(),
        "copies": args.copies,
        "dense_index": args.dense_index,
        "rows": n_ins,
        "insert_s": t_insert,
        "flush_s": t_flush,
        "load_s": t_load,
        "pct": {op: list(np.percentile(times[op], [50, 95, 99])) for op in live},
        "errors": errors,
        "ids": dump,
        "scores": scores,
    }
    if args.dump_ids:
        json.dump(summary, open(args.dump_ids, "w"))
    print("SUMMARY", json.dumps({k: v for k, v in summary.items() if k not in ("ids", "scores")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
