"""`python -m rag.bench`: ingest throughput against the seeds' reference path, query
latency (on collections grown from real chunks), the dense index's recall against exact
search, a BEIR set's nDCG@10 inside a grown collection, and startup time. Results are
printed; docs/BENCHMARKS.md records them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
from rich.console import Console
from rich.table import Table

from rag.cli import ProgressBars, err, fail, settings_or_exit
from rag.settings import PROJECT_ROOT, SearchMode

SCIFACT = PROJECT_ROOT.parent / "shared" / "data" / "beir" / "scifact"

app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)


def _machine() -> dict:
    load1, _, _ = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_1min_at_start": round(load1, 2),
    }


@app.command()
def ingest(
    corpus: Annotated[Path, typer.Option(help="A BEIR corpus folder.")] = SCIFACT,
    limit_docs: Annotated[
        int | None, typer.Option(min=1, help="Use the first N documents only.")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch threads.")] = None,
    reference: Annotated[
        bool, typer.Option(help="Also run the seeds' reference path (--no-reference: skip).")
    ] = True,
    db_dir: Annotated[
        Path | None, typer.Option(help="Folder for the two Milvus Lite dbs (default: temp).")
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            help="Embedder profile (repeatable: each ingests the same documents, in turn, and "
            "the ratio is to the first; the reference path runs with one MiniLM + SPLADE "
            "profile only)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Ingest a corpus through this project's path and the reference path; print chunks/s
    of both, their ratio, and the share of wall time outside model forward passes. With
    several --profile, compare the profiles' ingest on the same documents instead."""
    from rag.bench.ingest import reference_texts, run_ours, run_reference
    from rag.chunking import Chunker
    from rag.embedders import build_embedder
    from rag.embedders.packaged import resolve_model
    from rag.eval.beir import BeirDataset, dataset_name

    # Documents only: the forward timers hook the torch models, not a query encoder.
    overrides = {"dense_query_int8": False} | ({"num_threads": threads} if threads else {})
    settings = settings_or_exit(**overrides)
    machine = _machine()
    dataset = BeirDataset(corpus, "", dataset_name(corpus))
    if not dataset.corpus_path.is_file():
        fail(f"{dataset.corpus_path} does not exist")
    documents = list(dataset.documents())[:limit_docs]
    profiles = profile or [settings.profile]
    embedder = build_embedder(settings.model_copy(update={"profile": profiles[0]}))
    chunker = Chunker.from_settings(embedder.tokenizer, settings)
    reference = reference and len(profiles) == 1 and embedder.sparse_name.startswith("splade")
    with tempfile.TemporaryDirectory(dir=db_dir) as folder:
        runs = []
        if len(profiles) > 1:
            for i, name in enumerate(profiles):
                if i:
                    embedder = build_embedder(settings.model_copy(update={"profile": name}))
                    chunker = Chunker.from_settings(embedder.tokenizer, settings)
                err.print(f"profile {name}: {len(documents)} documents…")
                db = str(Path(folder) / f"ours_{i}.db")
                runs.append(run_ours(embedder, chunker, documents, db, path=name))
        elif reference:
            texts = reference_texts(chunker, documents)
            err.print(f"reference path: {len(texts)} chunks…")
            runs.append(
                run_reference(
                    texts,
                    resolve_model(embedder.dense_name),
                    resolve_model(embedder.sparse_name),
                    str(Path(folder) / "reference.db"),
                )
            )
        if len(profiles) == 1:
            err.print(f"this project's path: {len(documents)} documents…")
            runs.append(run_ours(embedder, chunker, documents, str(Path(folder) / "ours.db")))
    result = {
        "benchmark": "ingest",
        "corpus": dataset.name,
        "documents": len(documents),
        "profile": profiles[0] if len(profiles) == 1 else profiles,
        "threads": settings.num_threads,
        **machine,
        "runs": [
            {
                "path": r.path,
                "chunks": r.chunks,
                "seconds": round(r.seconds, 1),
                "chunks_per_s": round(r.chunks_per_second, 2),
                "forward_seconds": round(r.forward_seconds, 1),
                "outside_forward_share": round(r.outside_forward_share, 3),
            }
            for r in runs
        ],
    }
    if reference:
        result["ratio"] = round(runs[1].chunks_per_second / runs[0].chunks_per_second, 2)
    elif len(runs) > 1:  # each profile's chunks/s over the first profile's
        result["ratios"] = {
            r.path: round(r.chunks_per_second / runs[0].chunks_per_second, 2) for r in runs[1:]
        }
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"ingest {dataset.name}: {len(documents)} documents, "
                  f"{settings.num_threads} threads")  # fmt: skip
    for column in ("path", "chunks", "seconds", "chunks/s", "in forward", "outside forward"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for r in runs:
        table.add_row(
            r.path,
            str(r.chunks),
            f"{r.seconds:.1f}",
            f"{r.chunks_per_second:.2f}",
            f"{r.forward_seconds:.1f} s",
            f"{r.outside_forward_share:.0%}",
        )
    Console(file=sys.stdout).print(table)
    if reference:
        print(f"ratio ours/reference: {result['ratio']:.2f}x")
    for name, ratio in result.get("ratios", {}).items():
        print(f"ratio {name}/{runs[0].path}: {ratio:.2f}x")
    print(f"load average at start: {machine['load_1min_at_start']}")


def _queries(path: Path, n: int) -> list[str]:
    texts = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                texts.append(json.loads(line)["text"])
    if not texts:
        raise typer.BadParameter(f"{path} holds no queries")
    return [texts[i % len(texts)] for i in range(n)]


@app.command()
def query(
    db: Annotated[str | None, typer.Option(help="Milvus Lite db path or server URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection name.")] = None,
    queries: Annotated[
        Path, typer.Option(help="A BEIR queries.jsonl to take query texts from.")
    ] = SCIFACT / "queries.jsonl",
    n: Annotated[int, typer.Option("-n", min=1, help="Queries to time.")] = 300,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Hits per query.")] = 10,
    mode: Annotated[str, typer.Option(help="hybrid, dense, sparse or bm25.")] = "hybrid",
    stage_ranks: Annotated[
        bool, typer.Option(help="Also rank each list on its own (what the UI shows).")
    ] = False,
    rerank: Annotated[str | None, typer.Option(help="Also time a reranker.")] = None,
    rerank_batch: Annotated[
        int | None,
        typer.Option(min=1, help="Passages per reranker forward pass (a local reranker's)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Query-encoding threads (RAG_QUERY_THREADS).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time query embedding + search (+ rerank) over N real queries, one at a time, after a
    warm-up of 10 queries; print p50/p95/p99, peak memory and the db's size on disk."""
    from rag.bench.timing import engine_peak_rss_mb, peak_rss_mb, percentiles, size_on_disk_mb
    from rag.http import APIError
    from rag.rerankers import RerankError, build_reranker
    from rag.retriever import Retriever
    from rag.settings import SearchMode
    from rag.store import StoreError

    overrides = {"milvus_uri": db, "collection": collection, "query_threads": threads,
                 "reranker": rerank}  # fmt: skip
    settings = settings_or_exit(**overrides)
    machine = _machine()
    texts = _queries(queries, n + 10)
    opened = time.perf_counter()
    try:
        retriever = Retriever.from_settings(settings)
        reranker = build_reranker(settings, retriever.embedder)
    except (StoreError, ValueError, RerankError, OSError, APIError) as error:
        fail(error)
    if rerank_batch:
        if not hasattr(reranker, "batch_size"):
            fail(f"--rerank-batch: the reranker {settings.reranker!r} takes no batch size")
        reranker.batch_size = rerank_batch
    open_seconds = time.perf_counter() - opened
    chunks = retriever.store.count_chunks()
    depth = max(top_k, settings.rerank_candidates) if reranker else top_k
    timings: dict[str, list[float]] = {"embed_search": [], "rerank": [], "total": []}
    for i, text in enumerate(texts):
        started = time.perf_counter()
        hits = retriever.search(text, top_k=depth, mode=SearchMode(mode), stage_ranks=stage_ranks)
        searched = time.perf_counter()
        if reranker is not None:
            reranker.rerank(text, hits, top_k)
        done = time.perf_counter()
        if i >= 10:  # the first ten warm caches up
            timings["embed_search"].append((searched - started) * 1000)
            timings["rerank"].append((done - searched) * 1000)
            timings["total"].append((done - started) * 1000)
    uri = settings.milvus_uri
    result = {
        "benchmark": "query",
        "db": uri,
        "collection": settings.collection,
        "chunks": chunks,
        "queries": n,
        "mode": mode,
        "stage_ranks": stage_ranks,
        "sparse_query_terms": settings.sparse_query_terms,
        "reranker": settings.reranker,
        "rerank_batch": getattr(reranker, "batch_size", None),
        "threads": settings.query_threads,
        **machine,
        "embed_search": percentiles(timings["embed_search"]),
        **({"total_with_rerank": percentiles(timings["total"])} if reranker else {}),
        "open_seconds": round(open_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb()),
        "db_size_mb": round(size_on_disk_mb(uri)) if not uri.startswith("http") else None,
    }
    retriever.store.close()
    if retriever.store.uri and "://" not in retriever.store.uri:
        result["engine_peak_rss_mb"] = round(engine_peak_rss_mb())
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key}: {value}")


@app.command()
def recall(
    db: Annotated[str | None, typer.Option(help="Milvus Lite db path or server URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection name.")] = None,
    queries: Annotated[
        Path, typer.Option(help="A BEIR queries.jsonl to take query texts from.")
    ] = SCIFACT / "queries.jsonl",
    n: Annotated[int, typer.Option("-n", min=1, help="Queries to measure.")] = 200,
    k: Annotated[int, typer.Option("-k", min=1, help="The cut-off.")] = 10,
    exact_collection: Annotated[
        str | None,
        typer.Option(
            help="A FLAT collection of the same vectors in the same db, searched for "
            "the exact top k (fast at 1M rows) instead of reading every vector."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Recall@k of the collection's dense index against exact search over every stored
    dense vector (numpy) or a FLAT twin collection, for N real queries encoded as the
    product encodes them."""
    import numpy as np

    from rag.bench.recall import dense_recall
    from rag.http import APIError
    from rag.retriever import Retriever
    from rag.store import MilvusStore, StoreError

    settings = settings_or_exit(milvus_uri=db, collection=collection)
    machine = _machine()
    texts = _queries(queries, n)
    try:
        retriever = Retriever.from_settings(settings)
    except (StoreError, ValueError, OSError, APIError) as error:
        fail(error)
    twin = None
    try:
        if exact_collection:
            if not retriever.store.client.has_collection(exact_collection):
                raise StoreError(f"no collection {exact_collection!r} at {settings.milvus_uri}")
            twin = MilvusStore(retriever.store.client, exact_collection, uri=settings.milvus_uri)
            twin.client.load_collection(exact_collection)
        vectors = retriever.embedder.encode_queries(texts).dense
        result = dense_recall(retriever.store, np.asarray(vectors, dtype=np.float32), k, twin)
        index_type = retriever.store.built_dense_index()
    except (StoreError, ValueError, APIError) as error:
        fail(error)
    finally:
        retriever.store.close()
    row = {"benchmark": "recall", "db": settings.milvus_uri, "collection": settings.collection,
           "index_type": index_type, "rows": result.rows, "queries": result.queries,
           f"recall@{k}": round(result.recall, 4), **machine}  # fmt: skip
    if as_json:
        print(json.dumps(row))
        return
    for key, value in row.items():
        print(f"{key}: {value}")


@app.command("grown-eval")
def grown_eval(
    dataset: Annotated[Path, typer.Argument(help="The BEIR dataset folder whose queries to run.")],
    collections: Annotated[
        list[str],
        typer.Option("--collection", help="A grown collection to search (repeatable)."),
    ],
    db: Annotated[str | None, typer.Option(help="Milvus Lite db path or server URL.")] = None,
    split: Annotated[str, typer.Option(help="The qrels split (qrels/SPLIT.tsv).")] = "test",
    modes: Annotated[
        list[SearchMode] | None,
        typer.Option("--mode", help="Mode (repeatable; default dense and hybrid)."),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(
            help="Start of the set's source collection names (default "
            "eval_<dataset>_, as rag.eval names them)."
        ),
    ] = None,
    limit_queries: Annotated[
        int | None, typer.Option("--limit-queries", min=1, help="Score the first N queries.")
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=16_384,  # Milvus's largest top k
            help="Chunks retrieved per query (default 300). A collection grown with --repeat "
            "holds each chunk once per copy: multiply by the copies.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object a line.")] = False,
) -> None:
    """nDCG@10, Recall@10, Recall@100 and MRR@10 of DATASET's judged queries inside
    collections grown by `grow` (the set's chunks among every other corpus's): one row per
    collection and mode, to compare dense indexes (FLAT, IVF_FLAT) at scale."""
    from rag.bench.grown_eval import DEPTH, score_in_collection, set_prefix
    from rag.eval.beir import BeirDataset, DatasetError
    from rag.eval.metrics import METRIC_NAMES
    from rag.http import APIError
    from rag.retriever import Retriever
    from rag.store import StoreError

    try:
        beir = BeirDataset.open(dataset, split)
    except DatasetError as error:
        fail(error)
    queries, qrels = beir.judged_queries(limit_queries)
    prefix = prefix or set_prefix(beir)
    depth = depth or DEPTH
    machine = _machine()
    rows = []
    for name in collections:
        settings = settings_or_exit(milvus_uri=db, collection=name)
        try:
            retriever = Retriever.from_settings(settings)
        except (StoreError, ValueError, OSError, APIError) as error:
            fail(error)
        try:
            described = {"benchmark": "grown-eval", "dataset": beir.name, "split": split,
                         "db": settings.milvus_uri, "collection": name, "prefix": prefix,
                         "index_type": retriever.store.built_dense_index(),
                         "chunks": retriever.store.count_chunks(), "depth": depth}  # fmt: skip
            for mode in modes or [SearchMode.DENSE, SearchMode.HYBRID]:
                scores = score_in_collection(retriever, queries, qrels, mode, prefix, depth,
                                             fusion=settings.fusion, rrf_k=settings.rrf_k,
                                             weights=settings.weights)  # fmt: skip
                row = {**described, "mode": mode.value, "queries": len(queries),
                       **{m: round(v, 4) for m, v in scores.items()}, **machine}  # fmt: skip
                rows.append(row)
                if as_json:
                    print(json.dumps(row), flush=True)
        except (ValueError, APIError) as error:
            fail(error)
        finally:
            retriever.store.close()
    if not as_json:
        table = Table(title=f"{beir.name} {split}: {len(queries)} judged queries, "
                      f"sources {prefix}…")  # fmt: skip
        for column in ("collection", "index", "chunks", "mode", *METRIC_NAMES):
            table.add_column(column, justify="left" if column == "collection" else "right")
        for row in rows:
            table.add_row(row["collection"], row["index_type"], f"{row['chunks']:,}",
                          row["mode"], *(f"{row[m]:.4f}" for m in METRIC_NAMES))  # fmt: skip
        Console(file=sys.stdout).print(table)


@app.command()
def grow(
    target: Annotated[int, typer.Option(min=1, help="Chunks the collection should hold.")],
    sources: Annotated[
        list[str],
        typer.Option("--from", help="A db (path or URL) to copy collections from (repeatable)."),
    ],
    db: Annotated[str, typer.Option(help="The db to grow the collection in.")] = "data/bench.db",
    collection: Annotated[
        str | None, typer.Option(help="Collection name (default bench_<target>).")
    ] = None,
    repeat: Annotated[
        bool,
        typer.Option(
            "--repeat",
            help="Copy the sources again (new ids) when they hold too few chunks: for timing "
            "only, the chunks are not distinct.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Grow a collection of real chunks for `query`: copy every collection of the default
    profile's models found in the --from dbs (already embedded: nothing is re-embedded)
    until it holds TARGET chunks. Exit 2 when the sources hold too few (and no --repeat)."""
    from rag.bench.grow import describe, find_sources
    from rag.bench.grow import grow as grow_collection
    from rag.embedders import build_embedder
    from rag.store import CollectionProfile, MilvusStore, StoreError

    settings = settings_or_exit()
    profile = CollectionProfile.of(build_embedder(settings))
    name = collection or f"bench_{target}"
    try:
        found = find_sources(sources, profile)
        store = MilvusStore.open(db, name, profile, dense_index=settings.dense_index)
    except (StoreError, ValueError) as error:
        fail(error)
    try:
        with ProgressBars() as progress:
            held = store.count_chunks()
            task = progress.add(f"growing {name}", total=target, completed=held)
            started = time.perf_counter()
            chunks = grow_collection(
                store, found, target, lambda n: progress.advance(task, n), repeat=repeat
            )
            seconds = time.perf_counter() - started
    except ValueError as error:
        fail(error)
    finally:
        store.close()
    result = {"benchmark": "grow", "db": db, "collection": name, "chunks": chunks,
              "repeat": repeat,
              "seconds": round(seconds, 1), "sources": describe(found)}  # fmt: skip
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{name}: {chunks} chunks from {len(found)} collections in {seconds:.0f} s")


@app.command()
def startup(
    db: Annotated[str | None, typer.Option(help="Milvus Lite db path or server URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection name.")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Cold starts to time.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Seconds from process start to the first answered query: `python -m rag search` in a
    new process (imports, models loaded, collection loaded and warmed up, one query)."""
    command = [sys.executable, "-m", "rag", "search", "What is a sparse vector?", "--json"]
    for flag, value in (("--db", db), ("--collection", collection)):
        if value:
            command += [flag, value]
    machine = _machine()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds.append(round(time.perf_counter() - started, 2))
        if done.returncode != 0:
            err.print(done.stderr[-2000:], highlight=False)
            raise typer.Exit(1)
    result = {"benchmark": "startup", "command": " ".join(command[1:]), **machine,
              "seconds": seconds}  # fmt: skip
    if as_json:
        print(json.dumps(result))
    else:
        print(f"startup to first answer: {', '.join(f'{s:.1f} s' for s in seconds)}")


if __name__ == "__main__":
    app()
