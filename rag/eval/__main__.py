"""`python -m rag.eval DATASET_DIR --split SPLIT`: score retrieval modes on a BEIR set."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
from rich.console import Console
from rich.table import Table

from ingest.fitting import after_ingest, prepare_ingest
from ingest.pipeline import FileOutcome, Ingestor, IngestReport, Status
from rag.chunking import Chunker
from rag.cli import ProgressBars, err, fail, settings_or_exit, weights_option
from rag.embedders import Composition, UnknownProfileError, build_embedder
from rag.embedders.registry import composition, resolve
from rag.eval.beir import BeirDataset, DatasetError, Qrels
from rag.eval.context_recall import PREFIX, ContextRecall, HitList, context_recall, ranked
from rag.eval.metrics import METRIC_NAMES
from rag.eval.page_recall import PageRecall, page_recall
from rag.eval.runner import (
    DEFAULT_TOP_K,
    ChunkingConfig,
    EvalMode,
    PrecomputedQueries,
    collection_name,
    run_mode,
)
from rag.http import APIError
from rag.rerankers import (
    RERANKERS,
    RerankError,
    UnknownRerankerError,
    build_reranker,
    rerank_weight_of,
)
from rag.retriever import Retriever
from rag.search import spread_per_source
from rag.settings import PROJECT_ROOT, Settings
from rag.store import CollectionProfile, MilvusStore, StoreError

DEFAULT_EVAL_DB = PROJECT_ROOT / "data" / "eval.db"

app = typer.Typer(add_completion=False, help=__doc__)


EVAL_BATCH_CHUNKS = 512  # chunks per embedding batch (a corpus is ingested in one run)
CONTEXT_HITS = 100  # hits kept per query for context recall (4,000 tokens hold about 25)
PAGE_ROW = "page-recall"


@app.command()
def main(
    dataset_dir: Annotated[Path, typer.Argument(help="A BEIR dataset folder.")],
    split: Annotated[str, typer.Option(help="The qrels split (qrels/SPLIT.tsv).")] = "test",
    db: Annotated[
        str | None, typer.Option(help="Milvus Lite db path or server URL for eval collections.")
    ] = None,
    mode: Annotated[
        list[EvalMode] | None, typer.Option(help="Mode to score (repeatable; default all).")
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            help="Embedder profile (repeatable: profiles are compared; a hybrid function or "
            "DENSE+SPARSE also works, see python -m rag embedders)."
        ),
    ] = None,
    dense: Annotated[str | None, typer.Option(help="Dense function (with --sparse).")] = None,
    sparse: Annotated[str | None, typer.Option(help="Sparse function (with --dense).")] = None,
    limit_queries: Annotated[
        int | None, typer.Option("--limit-queries", min=1, help="Score the first N queries.")
    ] = None,
    sample_queries: Annotated[
        int | None,
        typer.Option(
            "--sample-queries", min=1, help="Score a random sample of N queries (seed 0)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per mode, one a line.")
    ] = False,
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, help="Chunks retrieved per query.")
    ] = DEFAULT_TOP_K,
    chunk_size: Annotated[int | None, typer.Option(help="Max tokens per chunk.")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap tokens.")] = None,
    rrf_k: Annotated[int | None, typer.Option("--rrf-k", help="RRF constant k.")] = None,
    weights: Annotated[str | None, typer.Option(help="Weighted fusion: W_DENSE,W_SPARSE.")] = None,
    bm25_analyzer: Annotated[
        str | None,
        typer.Option(help="Tokenizer of the bm25 mode: standard or jieba (RAG_BM25_ANALYZER)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Torch threads (default RAG_NUM_THREADS).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Texts per model forward pass.")] = None,
    rerank: Annotated[
        str | None,
        typer.Option(
            "--rerank",
            help=f"Also score each mode reranked ('MODE+rerank' rows): {', '.join(RERANKERS)}.",
        ),
    ] = None,
    reranker_model: Annotated[
        str | None, typer.Option(help="The reranker's model (hub id or local path).")
    ] = None,
    rerank_depth: Annotated[
        int | None,
        typer.Option(min=1, help="Chunks reranked per query (default RAG_RERANK_CANDIDATES)."),
    ] = None,
    rerank_weight: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1,
            help="Share of the reranker's score in the final order (default RAG_RERANK_WEIGHT, "
            "else the reranker's own).",
        ),
    ] = None,
    context_budget: Annotated[
        list[int] | None,
        typer.Option(
            "--context-budget",
            min=1,
            help="Also report context recall at this many tokens (repeatable): "
            "'context-recall@N' rows per mode.",
        ),
    ] = None,
    context_seeds: Annotated[
        int | None,
        typer.Option(
            "--context-seeds",
            min=1,
            help="Hits that seed the expanded context (default RAG_LLM_PASSAGES).",
        ),
    ] = None,
    page_field: Annotated[
        str | None,
        typer.Option(
            "--page-field",
            help="Also report page-level recall with each document mapped to its page by this "
            "corpus metadata field (e.g. path): 'page-recall' rows per mode, for no cap and "
            "1, 2 and 3 chunks per page.",
        ),
    ] = None,
) -> None:
    """Ingest the corpus (once per corpus × profile × chunking), run every judged query in
    each mode and report nDCG@10, Recall@10, Recall@100 and MRR@10, for each profile. With
    --rerank, each mode's retrieved chunks are also reranked and scored as 'MODE+rerank'.
    With --context-budget N, each mode also gets 'context-recall@N' rows: the share of
    queries whose relevant document has a chunk (or, '_whole', all its chunks) in the LLM's
    context of N tokens, for the plain top-k and with neighbour expansion, from the ranked
    hits and from the hits capped at RAG_PER_SOURCE per document. With --page-field F, each
    mode also gets 'page-recall' rows: Recall@5/8/10 and MRR@10 of the hits spread by page
    (the document's metadata field F) as the product spreads them by file.

    Exit code 2 when the dataset, a profile or the store cannot be used.
    """
    overrides = {
        "dense": dense,
        "sparse": sparse,
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "rrf_k": rrf_k,
        "weights": weights_option(weights),
        "bm25_analyzer": bm25_analyzer,
        "num_threads": threads,
        "batch_size": batch_size,
        "reranker": rerank,
        "reranker_model": reranker_model,
        "rerank_candidates": rerank_depth,
        "rerank_weight": rerank_weight,
        "llm_passages": context_seeds,
    }
    settings = settings_or_exit(**overrides)
    modes = list(dict.fromkeys(mode or list(EvalMode)))
    try:
        compositions = [resolve(settings)] if dense or sparse or not profile else []
        compositions += [composition(name) for name in profile or []]
        dataset = BeirDataset.open(dataset_dir, split)
        queries, qrels = dataset.judged_queries(limit_queries, sample_queries)
        page_of = dataset.metadata_field(page_field) if page_field else None
    except (DatasetError, UnknownProfileError) as error:
        fail(error)
    if not queries:
        fail(f"no judged queries in {dataset.name} {split}")

    budgets = sorted(set(context_budget or []))
    results = []
    for chosen in dict.fromkeys(compositions):
        rows = _evaluate(
            settings,
            chosen,
            dataset,
            queries,
            qrels,
            modes,
            db or str(DEFAULT_EVAL_DB),
            top_k,
            budgets,
            page_of,
        )
        for row in rows:
            if as_json:
                print(json.dumps(row), flush=True)
        results.extend(rows)
    if not as_json:
        _print_table([row for row in results if "row" not in row])
        if budgets:
            _print_context_table([row for row in results if row.get("row", "").startswith(PREFIX)])
        if page_of:
            _print_page_table([row for row in results if row.get("row") == PAGE_ROW])


def _evaluate(
    settings: Settings,
    chosen: Composition,
    dataset: BeirDataset,
    queries: dict[str, str],
    qrels: Qrels,
    modes: list[EvalMode],
    uri: str,
    top_k: int,
    budgets: list[int],
    page_of: dict[str, str] | None = None,
) -> list[dict]:
    """Ingest the corpus for one profile (reusing its collection) and score every mode
    (with ``budgets``, also its context recall at each; with ``page_of``, its page-level
    recall)."""
    try:
        with err.status(f"loading embedder profile {chosen.name}…"):
            embedder = build_embedder(settings, chosen)
    except (UnknownProfileError, APIError, OSError) as error:
        fail(error)
    try:
        reranker = build_reranker(settings, embedder)
    except (UnknownRerankerError, RerankError, OSError) as error:
        fail(f"reranker: {error}")
    chunker = Chunker.from_settings(embedder.tokenizer, settings)
    chunking = ChunkingConfig.of(settings, chunker)
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    try:
        profile_record = CollectionProfile.of(embedder)
        name = collection_name(dataset, dataset.corpus_hash(), profile_record, chunking)
        store = MilvusStore.open(
            uri, name, profile_record, token=token, analyzer=settings.bm25_analyzer
        )
        prepare_ingest(store, embedder)
    except (StoreError, APIError) as error:
        fail(error)

    # Longest documents first: each embedding batch holds texts of similar length.
    documents = sorted(dataset.documents(), key=lambda d: -sum(len(s.text) for s in d.sections))
    ingestor = Ingestor(store, embedder, chunker, flush_chunks=EVAL_BATCH_CHUNKS)
    with ProgressBars() as progress:
        task = progress.add(f"ingest {dataset.name}", len(documents))
        written = 0

        def on_document(outcome: FileOutcome) -> None:
            nonlocal written
            written += outcome.chunks_written
            elapsed = progress.elapsed(task)
            rate = f"{written / elapsed:.1f} chunks/s" if written and elapsed else ""
            progress.advance(task, note=f"{written} chunks {rate}")

        report = ingestor.run_documents(documents, on_file=on_document)
    if report.failed:
        first = report.failed[0]
        err.print(
            f"[yellow]warning[/yellow] {len(report.failed)} documents not ingested "
            f"(first: {first.path}: {first.reason})",
            highlight=False,
        )
    refitted = after_ingest(store, embedder, drift=settings.bm25_refit_drift)
    if refitted is not None:
        err.print(refitted.describe(), highlight=False)
    n_chunks = store.count_chunks()
    err.print(
        f"collection {name}: {n_chunks} chunks of {len(documents)} documents "
        f"({report.count(Status.UNCHANGED)} reused, {report.chunks_written} chunks written "
        f"in {report.seconds:.1f} s, {_rate(report):.1f} chunks/s)",
        highlight=False,
    )

    query_embedder = PrecomputedQueries(embedder)
    encode_seconds = 0.0
    if any(m is not EvalMode.BM25 for m in modes):
        started = time.perf_counter()
        with err.status(f"encoding {len(queries)} queries…"):
            query_embedder.prepare(list(queries.values()))
        encode_seconds = time.perf_counter() - started
    retriever = Retriever(
        store,
        query_embedder,
        candidates=top_k,
        sparse_query_terms=settings.sparse_query_terms,
        normalisation=settings.normalisation,
        section_weight=settings.section_weight,
    )

    rows = []
    weight = rerank_weight_of(reranker, settings.rerank_weight)
    with ProgressBars() as progress:
        for eval_mode in modes:
            task = progress.add(f"{eval_mode.value:>15}", len(queries))
            try:
                results = run_mode(
                    retriever,
                    queries,
                    qrels,
                    eval_mode,
                    top_k=top_k,
                    rrf_k=settings.rrf_k,
                    weights=settings.weights,
                    reranker=reranker,
                    rerank_depth=settings.rerank_candidates,
                    rerank_weight=settings.rerank_weight,
                    on_query=lambda task=task: progress.advance(task),
                    keep_hits=top_k if page_of else CONTEXT_HITS if budgets else 0,
                )
            except RerankError as error:
                fail(f"reranker: {error}")
            note = "  ".join(f"{r.mode} nDCG@10 {r.scores['ndcg@10']:.3f}" for r in results)
            progress.update(task, len(queries), note)
            rows.extend(
                {
                    **_row_head(dataset, embedder, result.mode),
                    **{k: round(result.scores[k], 4) for k in METRIC_NAMES},
                    "n_queries": result.n_queries,
                    "seconds": round(result.seconds, 2),
                    "collection": name,
                    "chunks": n_chunks,
                    "chunk_size": settings.chunk_size,
                    "chunk_overlap": settings.chunk_overlap,
                    "top_k": top_k,
                    "rrf_k": settings.rrf_k,
                    "weights": list(settings.weights),
                    "sparse_query_terms": settings.sparse_query_terms,
                    "normalisation": settings.normalisation.value,
                    "reranker": reranker.name if result.mode.endswith("+rerank") else None,
                    "rerank_depth": settings.rerank_candidates if reranker else None,
                    "rerank_weight": weight if reranker else None,
                    "query_encode_seconds": round(encode_seconds, 2),
                    "ingest_seconds": round(report.seconds, 1),
                    "chunks_written": report.chunks_written,
                    "ingest_chunks_per_s": round(_rate(report), 1),
                    "threads": settings.num_threads,
                    "precision": chunking.precision,
                }
                for result in results
            )
            for result in results if budgets else []:
                recall = context_recall(
                    result.hits,
                    qrels,
                    store.chunks_at,
                    embedder.tokenizer,
                    budgets,
                    seeds=settings.llm_passages,
                    hit_lists=_hit_lists(settings),
                    count=lambda source: store.count_chunks(source=source),
                )
                rows.extend(_context_row(dataset, embedder, result.mode, name, r) for r in recall)
            for result in results if page_of else []:
                paged = page_recall(result.hits, qrels, page_of)
                rows.extend(_page_row(dataset, embedder, result.mode, name, r) for r in paged)
    store.close()
    return rows


def _hit_lists(settings: Settings) -> dict[str, HitList]:
    """The hit lists context recall is measured on: the ranked hits, and with
    ``RAG_PER_SOURCE`` N > 0 the hits spread at N chunks per document (page-level results)."""
    lists: dict[str, HitList] = {"top-k": ranked}
    if settings.per_source:
        cap = settings.per_source
        lists[f"per-source-{cap}"] = lambda hits: spread_per_source(hits, cap)
    return lists


def _row_head(dataset: BeirDataset, embedder, mode: str) -> dict:
    """The keys every JSON row starts with."""
    return {
        "dataset": dataset.name,
        "split": dataset.split,
        "mode": mode,
        "profile": embedder.profile,
    }


def _context_row(
    dataset: BeirDataset, embedder, mode: str, collection: str, recall: ContextRecall
) -> dict:
    return {
        **_row_head(dataset, embedder, mode),
        "row": recall.label,
        "hits": recall.hits,
        "budget": recall.budget,
        "plain": round(recall.plain, 4),
        "expanded": round(recall.expanded, 4),
        "plain_whole": round(recall.plain_whole or 0.0, 4),
        "expanded_whole": round(recall.expanded_whole or 0.0, 4),
        "seeds": recall.seeds,
        "n_queries": recall.n_queries,
        "collection": collection,
    }


def _page_row(
    dataset: BeirDataset, embedder, mode: str, collection: str, recall: PageRecall
) -> dict:
    return {
        **_row_head(dataset, embedder, mode),
        "row": PAGE_ROW,
        "per_page": recall.cap,
        **{f"recall@{k}": round(value, 4) for k, value in recall.recall.items()},
        "mrr@10": round(recall.mrr, 4),
        "n_queries": recall.n_queries,
        "collection": collection,
    }


def _rate(report: IngestReport) -> float:
    """Chunks written per second of the ingest."""
    return report.chunks_written / report.seconds if report.seconds > 0 else 0.0


def _print_table(rows: list[dict]) -> None:
    first = rows[0]
    profiles = list(dict.fromkeys(row["profile"] for row in rows))
    title = f"{first['dataset']} ({first['split']}, {first['n_queries']} queries"
    table = Table(title=title + (f", profile {profiles[0]})" if len(profiles) == 1 else ")"))
    labels = ("profile", "mode") if len(profiles) > 1 else ("mode",)
    for column in (*labels, *METRIC_NAMES, "seconds"):
        table.add_column(column, justify="left" if column in labels else "right")
    for row in rows:
        table.add_row(
            *(row[label] for label in labels),
            *(f"{row[k]:.4f}" for k in METRIC_NAMES),
            f"{row['seconds']:.1f}",
        )
    Console(file=sys.stdout).print(table)


def _print_context_table(rows: list[dict]) -> None:
    first = rows[0]
    title = (
        f"context recall, {first['dataset']} ({first['split']}, {first['n_queries']} queries; "
        f"expanded: {first['seeds']} hits and their neighbours)"
    )
    values = ("plain", "expanded", "plain_whole", "expanded_whole")
    _print_rows(title, rows, ("mode", "row", "hits"), values)


def _print_page_table(rows: list[dict]) -> None:
    first = rows[0]
    title = (
        f"page-level recall, {first['dataset']} ({first['split']}, {first['n_queries']} "
        "queries; chunk positions after spreading by page)"
    )
    values = tuple(key for key in first if key.startswith(("recall@", "mrr@")))
    shown = [{**row, "per page": str(row["per_page"] or "no cap")} for row in rows]
    _print_rows(title, shown, ("mode", "per page"), values)


def _print_rows(
    title: str, rows: list[dict], labels: tuple[str, ...], values: tuple[str, ...]
) -> None:
    """A table of ``rows``: the ``labels`` columns as they are (led by ``profile`` when the
    rows hold more than one), then the ``values`` columns to four decimals."""
    if len({row["profile"] for row in rows}) > 1:
        labels = ("profile", *labels)
    table = Table(title=title)
    for column in (*labels, *values):
        table.add_column(column, justify="left" if column in labels else "right")
    for row in rows:
        table.add_row(*(str(row[k]) for k in labels), *(f"{row[v]:.4f}" for v in values))
    Console(file=sys.stdout).print(table)


if __name__ == "__main__":
    app()
