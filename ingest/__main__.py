"""`python -m ingest PATH [PATH ...]`: ingest documents into the Milvus collection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ingest.discover import discover
from ingest.fitting import after_ingest, prepare_ingest
from ingest.pipeline import FileOutcome, Ingestor, Status
from rag.chunking import Chunker
from rag.cli import ProgressBars, err, fail, settings_or_exit
from rag.embedders import UnknownProfileError, build_embedder
from rag.embedders.registry import resolve
from rag.http import APIError
from rag.store import CollectionProfile, MilvusStore, StoreError, connect

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest.")],
    db: Annotated[str | None, typer.Option(help="Milvus Lite db path or server URL.")] = None,
    collection: Annotated[str | None, typer.Option(help="Collection name.")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Embedder profile (python -m rag embedders).")
    ] = None,
    dense: Annotated[
        str | None, typer.Option(help="Dense function; with --sparse, replaces --profile.")
    ] = None,
    sparse: Annotated[
        str | None, typer.Option(help="Sparse function; with --dense, replaces --profile.")
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="Glob of files to take (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Glob of files to skip (repeatable).")
    ] = None,
    hidden: Annotated[bool, typer.Option(help="Also take hidden files and folders.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Texts per model forward pass.")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Max tokens per chunk.")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap tokens.")] = None,
    prune: Annotated[
        bool, typer.Option(help="Delete chunks of files under PATHS that no longer exist.")
    ] = False,
    reset: Annotated[bool, typer.Option(help="Drop the collection first.")] = False,
    refit_bm25: Annotated[
        bool,
        typer.Option(
            "--refit-bm25", help="Refit BM25 on every stored chunk and rewrite sparse vectors."
        ),
    ] = False,
) -> None:
    """Ingest documents (md, txt, html, pdf, docx) into the Milvus collection.

    Unchanged files are skipped, changed files replace their chunks. Every path that fails
    gets one line ``failed PATH: reason`` (or ``error PATH: reason`` for a given path or a
    folder that cannot be walked) on stderr; the summary counts every file's outcome and
    what the walk skipped. Exit code 1 when any path failed, 2 when the store cannot be used.
    """
    overrides = {
        "milvus_uri": db,
        "collection": collection,
        "profile": profile,
        "dense": dense,
        "sparse": sparse,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
    }
    settings = settings_or_exit(**overrides)
    found = discover(paths, include, exclude, hidden)
    for path, reason in found.errors:
        err.print(_problem("error", path, reason), soft_wrap=True)

    try:
        with err.status(f"loading embedder profile {resolve(settings).name}…"):
            embedder = build_embedder(settings)
    except (UnknownProfileError, APIError) as error:
        fail(error)
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    try:
        if reset:
            old = MilvusStore(
                connect(settings.milvus_uri, token), settings.collection, uri=settings.milvus_uri
            )
            old.drop()
            old.close()
        store = MilvusStore.open(
            settings.milvus_uri,
            settings.collection,
            CollectionProfile.of(embedder),
            token=token,
            dense_index=settings.dense_index,
            analyzer=settings.bm25_analyzer,
            create=True,
        )
        prepare_ingest(store, embedder, refit=refit_bm25)
    except (StoreError, APIError, ValueError) as error:  # ValueError: an unknown index or analyzer
        fail(error)

    chunker = Chunker.from_settings(embedder.tokenizer, settings)
    ingestor = Ingestor(store, embedder, chunker, max_bytes=int(settings.max_file_mb * 1_000_000))
    with ProgressBars() as progress:
        files_task = progress.add("files", total=len(found.files))
        chunks_task = progress.add("chunks written", total=None)

        def on_file(outcome: FileOutcome) -> None:
            progress.advance(files_task)
            if outcome.status is Status.FAILED:
                progress.print(_problem("failed", outcome.path, outcome.reason or ""))

        def on_chunks(n: int) -> None:
            progress.advance(chunks_task, n)

        report = ingestor.run(found.files, on_file=on_file, on_chunks=on_chunks)
    if prune:
        report.outcomes.extend(ingestor.prune(found.roots, {str(p) for p in found.files}))
    try:
        refitted = after_ingest(
            store, embedder, refit_now=refit_bm25, drift=settings.bm25_refit_drift
        )
    except StoreError as error:
        fail(error)
    finally:
        store.close()

    print(f"{settings.collection} @ {shown_uri(settings.milvus_uri)}")
    print(report.summary())
    print(found.summary())
    if refitted is not None:
        print(refitted.describe())
    if report.failed or found.errors:
        n = len(report.failed) + len(found.errors)
        err.print(f"[red]{n} path(s) failed[/red]; see the lines above.", highlight=False)
        raise typer.Exit(1)


def _problem(label: str, path: str, reason: str) -> Text:
    """``label path: reason`` as one line, whatever the path holds: no markup is read from
    it, and line breaks, other control characters and undecodable bytes show as escapes."""
    line = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in f"{path}: {reason}")
    return Text.assemble((label, "red"), " ", line)


def shown_uri(uri: str) -> str:
    """A db path relative to the working directory when it lies inside it (``data/milvus.db``
    run from the repo), else the URI as it is (a server URL, a path elsewhere)."""
    path = Path(uri)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return uri


if __name__ == "__main__":
    app()
