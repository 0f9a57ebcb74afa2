"""Ingest throughput: this project's path against the reference path of the seeds.

The reference is what a pymilvus user writes from the Milvus embedding docs (the seeds):
``SentenceTransformerEmbeddingFunction`` and ``SpladeEmbeddingFunction`` from
``pymilvus.model`` (``pymilvus[model]``) on the same two models, then
``MilvusClient.insert`` in batches of 32 rows into a collection with a dense and a sparse
field. It embeds the very chunk texts this project embeds, so both paths do the same model
work; its chunking is done before its clock starts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from pymilvus import DataType, MilvusClient

from ingest.fitting import after_ingest, prepare_ingest
from ingest.pipeline import Ingestor
from rag.bench.timing import ForwardTimer
from rag.chunking import Chunker, embedding_text
from rag.embedders.hybrid import DenseSparseEmbedder
from rag.store import CollectionProfile, MilvusStore, connect, disconnect
from rag.types import Document

REFERENCE_BATCH = 32  # rows per embedding call and per MilvusClient.insert, as in the docs


@dataclass
class IngestRun:
    """One path's measurement.

    Attributes:
        path: ``ours`` or ``reference``, or the profile when profiles are compared.
        chunks: chunks embedded and stored.
        seconds: wall-clock seconds from the first document to the last row stored.
        forward_seconds: seconds inside the two models' forward passes.
    """

    path: str
    chunks: int
    seconds: float
    forward_seconds: float

    @property
    def chunks_per_second(self) -> float:
        """Chunks stored per wall-clock second."""
        return self.chunks / self.seconds if self.seconds else 0.0

    @property
    def outside_forward_share(self) -> float:
        """Share of wall time spent outside the model forward passes (0–1)."""
        return 1 - self.forward_seconds / self.seconds if self.seconds else 0.0


def model_modules(embedder: DenseSparseEmbedder) -> list[torch.nn.Module]:
    """The top-level torch modules of an embedder's two sides: each side's ``model`` and,
    for SPLADE, its vocabulary projection, which runs outside its model once per text
    (``rag.embedders.splade``). A side without torch modules (fitted BM25) adds none."""
    modules = []
    for side in (embedder.dense, embedder.sparse):
        for name in ("model", "projection"):
            module = getattr(side, name, None)
            if isinstance(module, torch.nn.Module):
                modules.append(module)
    return modules


def run_ours(
    embedder: DenseSparseEmbedder,
    chunker: Chunker,
    documents: Sequence[Document],
    uri: str,
    *,
    flush_chunks: int = 512,
    path: str = "ours",
) -> IngestRun:
    """Ingest ``documents`` into a new collection at ``uri`` through the product's ingest
    (``Ingestor.run_documents``: chunk → embed in batches of ``flush_chunks`` → journaled
    upsert and commit on a writer thread while the next batch is embedded), a fitted sparse
    side (BM25) fitted after the run as ``python -m ingest`` does; the fit is in the time.
    The run is labelled ``path`` (``ours``, or the profile when several are compared)."""
    store = MilvusStore.open(uri, "bench_ours", CollectionProfile.of(embedder))
    try:
        ingestor = Ingestor(store, embedder, chunker, flush_chunks=flush_chunks)
        with ForwardTimer(model_modules(embedder)) as timer:
            started = time.perf_counter()
            prepare_ingest(store, embedder)
            report = ingestor.run_documents(documents)
            after_ingest(store, embedder)
            seconds = time.perf_counter() - started
    finally:
        store.close()
    return IngestRun(path, report.chunks_written, seconds, timer.seconds)


def reference_texts(chunker: Chunker, documents: Sequence[Document]) -> list[str]:
    """The texts this project embeds for ``documents``, in document order."""
    return [embedding_text(c) for d in documents for c in chunker.chunk(d, "reference")]


def run_reference(
    texts: Sequence[str], dense_model: str, sparse_model: str, uri: str, *, device: str = "cpu"
) -> IngestRun:
    """Embed and insert ``texts`` the way the seeds show, into a new collection at ``uri``.

    ``dense_model`` and ``sparse_model`` are local model directories (or hub ids).
    """
    from pymilvus.model.dense import SentenceTransformerEmbeddingFunction
    from pymilvus.model.sparse import SpladeEmbeddingFunction

    dense = SentenceTransformerEmbeddingFunction(model_name=dense_model, device=device)
    splade = SpladeEmbeddingFunction(model_name=sparse_model, device=device)
    # pymilvus-model 0.3.4 tokenizes with `batch_encode_plus`, which transformers 5 removed;
    # for a list of texts it was `__call__` with the same arguments.
    tokenizer = splade.model.tokenizer
    if not hasattr(tokenizer, "batch_encode_plus"):
        tokenizer.batch_encode_plus = tokenizer.__call__
    client = connect(uri)
    try:
        schema = MilvusClient.create_schema(auto_id=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("text", DataType.VARCHAR, max_length=65_535)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dense.dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        index = client.prepare_index_params()
        index.add_index("dense", index_type="FLAT", metric_type="IP")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        client.create_collection("bench_reference", schema=schema, index_params=index)
        started = time.perf_counter()
        with ForwardTimer([dense.model, splade.model.model]) as timer:
            for start in range(0, len(texts), REFERENCE_BATCH):
                batch = list(texts[start : start + REFERENCE_BATCH])
                vectors = dense.encode_documents(batch)
                weights = splade.encode_documents(batch)
                rows = [
                    {"text": text, "dense": vectors[i], "sparse": weights[[i]]}
                    for i, text in enumerate(batch)
                ]
                client.insert("bench_reference", rows)
            client.flush("bench_reference")
        seconds = time.perf_counter() - started
    finally:
        disconnect(client, uri)
    return IngestRun("reference", len(texts), seconds, timer.seconds)
