"""Shared by the embedder tests: clean settings, a `default+bm25` composition on the
session's MiniLM, and one ingest as `python -m ingest` runs it."""

from __future__ import annotations

from pathlib import Path

from ingest.fitting import after_ingest, prepare_ingest
from ingest.pipeline import Ingestor
from rag.chunking import Chunker
from rag.embedders.bm25 import BM25Sparse
from rag.embedders.hybrid import DenseSparseEmbedder
from rag.settings import Settings


def clean_settings(**values) -> Settings:
    return Settings(_env_file=None, num_threads=1, **values)


def default_bm25(embedder, **bm25) -> DenseSparseEmbedder:
    """``default+bm25`` with a fresh BM25, sharing the session's loaded MiniLM (what
    ``build_embedder`` builds for it, see ``test_build_embedder_composes_the_functions``)."""
    return DenseSparseEmbedder(
        "default+bm25", embedder.dense, BM25Sparse(**bm25), embedder.tokenizer, 512
    )


def ingest(store, embedder, paths, *, drift=0.2, refit=False):
    """One ingest as ``python -m ingest`` runs it: prepare, run, then the refit policy."""
    prepare_ingest(store, embedder, refit=refit)
    chunker = Chunker.from_settings(embedder.tokenizer, clean_settings())  # with section rows
    report = Ingestor(store, embedder, chunker).run(sorted(paths))
    assert not report.failed, report.failed
    return report, after_ingest(store, embedder, refit_now=refit, drift=drift)


def top_pages(hits) -> list[str]:
    return [Path(h.source).name for h in hits]
