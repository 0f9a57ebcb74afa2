"""`python -m rag`: search the collection from the command line."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from rag.chunking import context_line
from rag.embedders import build_embedder
from rag.retriever import Retriever
from rag.settings import Fusion, SearchMode, Settings
from rag.store import StoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)

HIT_FIELDS = ("rank", "score", "chunk_id", "source", "title", "heading", "page", "text")


def _weights(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        dense, sparse = (float(part) for part in value.split(","))
    except ValueError:
        raise typer.BadParameter("expected two numbers: W_DENSE,W_SPARSE") from None
    return dense, sparse


@app.callback()
def main() -> None:
    """Hybrid (dense + sparse) retrieval over documents in Milvus."""


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question or keywords.")],
    db: Annotated[str | None, typer.Option(help="Milvus Lite db path or server URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection name.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Hits to return.")] = None,
    mode: Annotated[SearchMode | None, typer.Option(help="Fields to search.")] = None,
    fusion: Annotated[Fusion | None, typer.Option(help="How hybrid lists are fused.")] = None,
    rrf_k: Annotated[int | None, typer.Option("--rrf-k", help="RRF constant k.")] = None,
    weights: Annotated[str | None, typer.Option(help="Weighted fusion: W_DENSE,W_SPARSE.")] = None,
    source_prefix: Annotated[
        str | None, typer.Option(help="Only chunks whose source path starts with this.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
) -> None:
    """Search the collection and print ranked hits."""
    overrides = {
        "milvus_uri": db,
        "collection": collection,
        "top_k": top_k,
        "mode": mode,
        "fusion": fusion,
        "rrf_k": rrf_k,
        "weights": _weights(weights),
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    embedder = build_embedder(settings)
    try:
        retriever = Retriever.from_settings(settings, embedder)
        hits = retriever.search(
            query,
            top_k=settings.top_k,
            mode=settings.mode,
            fusion=settings.fusion,
            rrf_k=settings.rrf_k,
            weights=settings.weights,
            source_prefix=source_prefix,
        )
    except (StoreError, ValueError) as error:
        err.print(f"[red]error[/red] {error}", highlight=False)
        raise typer.Exit(2) from None
    retriever.store.close()
    if as_json:
        print(
            json.dumps(
                [{k: asdict(h)[k] for k in HIT_FIELDS} for h in hits], indent=2, ensure_ascii=False
            )
        )
        return
    console = Console(highlight=False)
    for hit in hits:
        where = context_line(hit.title, hit.heading)
        page = f" (page {hit.page})" if hit.page else ""
        console.print(f"[bold]{hit.rank:>2}.[/bold] {hit.score:.4f}  {hit.source}{page}")
        console.print(f"    [dim]{escape(where)}[/dim]")
        snippet = " ".join(hit.text.split())
        console.print(f"    {escape(snippet[:300])}{'…' if len(snippet) > 300 else ''}\n")


if __name__ == "__main__":
    app()
