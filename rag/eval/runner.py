"""The evaluation run: ingest a BEIR corpus once, run its judged queries per mode, score.

Ingest goes through the product's own ingest (``ingest.pipeline.Ingestor.run_documents``:
chunk → embed → journaled switch → store) into a collection named after the dataset, the
corpus's hash, the embedder profile and the chunking, so a second run with the same corpus,
profile and chunking reuses it. Each document is committed to the collection's manifest (a
``FileRecord`` whose ``source`` is the document id) once its chunks are stored: a killed
ingest resumes where it stopped.

Search goes through the product's query path (:class:`rag.search.Searcher`: retrieve →
rerank), without its fallbacks; its chunk hits are collapsed to documents (a document ranks
at its best chunk) and scored by :mod:`rag.eval.metrics`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np

from rag.chunking import Chunker
from rag.embedders.base import Embedder, Embeddings
from rag.embedders.precision import autocast_dtype
from rag.eval.beir import BeirDataset, Qrels
from rag.eval.metrics import collapse_to_documents, mean_scores
from rag.rerankers import Reranker
from rag.retriever import Retriever
from rag.search import Searcher
from rag.settings import Fusion, SearchMode, Settings
from rag.store import CollectionProfile
from rag.types import Hit

# Version of how a corpus is turned into chunks here; part of the collection name, so a
# change of the recipe never reuses a collection built by the old one.
INGEST_RECIPE = 1
DEFAULT_TOP_K = 300  # chunks retrieved per query, enough for 100 distinct documents
DOC_DEPTH = 100  # documents kept per query (Recall@100)


class EvalMode(StrEnum):
    """A retrieval configuration that the harness scores."""

    DENSE = "dense"
    SPARSE = "sparse"
    BM25 = "bm25"
    HYBRID_RRF = "hybrid-rrf"
    HYBRID_WEIGHTED = "hybrid-weighted"
    HYBRID_CONVEX = "hybrid-convex"

    @property
    def search_mode(self) -> SearchMode:
        """The retriever's mode for this configuration."""
        if self.value.startswith("hybrid-"):
            return SearchMode.HYBRID
        return SearchMode(self.value)

    @property
    def fusion(self) -> Fusion:
        """The fusion of a hybrid configuration (RRF for the others, where it is unused)."""
        if self.value.startswith("hybrid-"):
            return Fusion(self.value.removeprefix("hybrid-"))
        return Fusion.RRF


@dataclass(frozen=True)
class ChunkingConfig:
    """What decides the chunks and vectors of a corpus besides the corpus and profile.

    Attributes:
        chunking: the chunker's signature (``Chunker.signature``: algorithm, size, overlap).
        max_length: tokens the models read per text.
        precision: the forward passes' number format (``rag.embedders.precision``): vectors
            differ in their last digits, so each precision gets its own collection.
        analyzer: the tokenizer of Milvus's BM25 (``rag.store.LEXICAL_ANALYZERS``).
    """

    chunking: str
    max_length: int
    precision: str = "float32"
    analyzer: str = "standard"

    @classmethod
    def of(cls, settings: Settings, chunker: Chunker) -> ChunkingConfig:
        """The configuration ``settings`` and ``chunker`` give (precision as it resolves on
        this machine: ``auto`` is bfloat16 only with native bfloat16)."""
        precision = "bfloat16" if autocast_dtype(settings.precision) else "float32"
        return cls(chunker.signature, settings.max_length, precision, settings.bm25_analyzer)


def collection_name(
    dataset: BeirDataset, corpus_hash: str, profile: CollectionProfile, chunking: ChunkingConfig
) -> str:
    """``eval_<dataset>_<profile>_<hash>``: one collection per corpus × profile × chunking.

    The hash (10 hex) covers the corpus bytes, the embedder profile record (without fitted
    sparse parameters, which follow from the corpus), the chunking and
    :data:`INGEST_RECIPE`; the readable parts are for people only.
    """
    # Fitted state (BM25's parameters) is left out: it follows from the corpus.
    record = asdict(profile.composition())
    record.pop("sparse_params")
    chunking_record = asdict(chunking)
    if chunking.analyzer == "standard":  # collections made before the option keep their names
        chunking_record.pop("analyzer")
    key = json.dumps(
        {
            "corpus": corpus_hash,
            "profile": record,
            "chunking": chunking_record,
            "recipe": INGEST_RECIPE,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", f"{dataset.name}_{profile.profile}").strip("_")
    return f"eval_{slug[:60]}_{digest}"


class PrecomputedQueries:
    """An :class:`~rag.embedders.base.Embedder` whose query vectors are computed in batches
    beforehand (one forward pass per batch instead of one per query); any other text is
    encoded on demand. Documents go to the wrapped embedder."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        for name in ("profile", "dense_name", "sparse_name", "dim", "vocab_size", "languages"):
            setattr(self, name, getattr(embedder, name))
        self.max_tokens = embedder.max_tokens
        self.tokenizer = embedder.tokenizer
        self._row: dict[str, int] = {}
        self._vectors: Embeddings | None = None

    def prepare(self, texts: Sequence[str]) -> None:
        """Encode ``texts`` (distinct ones once) and keep their vectors."""
        unique = list(dict.fromkeys(texts))
        self._vectors = self.embedder.encode_queries(unique)
        self._row = {text: i for i, text in enumerate(unique)}

    def encode_documents(self, texts: Sequence[str]) -> Embeddings:
        return self.embedder.encode_documents(texts)

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        if self._vectors is None or any(t not in self._row for t in texts):
            return self.embedder.encode_queries(texts)
        rows = [self._row[t] for t in texts]
        return Embeddings(np.asarray(self._vectors.dense[rows]), self._vectors.sparse[rows])

    def query_terms(self, query: str) -> list[str]:
        return self.embedder.query_terms(query)


RERANK_SUFFIX = "+rerank"


@dataclass
class ModeResult:
    """One mode's scores on one dataset split.

    Attributes:
        mode: the row's label: an :class:`EvalMode` value, with ``+rerank`` appended for the
            reranked ranking of that mode.
        hits: query id → its first chunk hits in this ranking (``run_mode(keep_hits=N)``;
            empty by default), for context recall.
    """

    mode: str
    scores: dict[str, float]
    n_queries: int
    seconds: float
    rankings: dict[str, list[str]]
    hits: dict[str, list[Hit]] = field(default_factory=dict)


def run_mode(
    retriever: Retriever,
    queries: dict[str, str],
    qrels: Qrels,
    mode: EvalMode,
    *,
    top_k: int = DEFAULT_TOP_K,
    rrf_k: int = 60,
    weights: tuple[float, float] = (0.5, 0.5),
    reranker: Reranker | None = None,
    rerank_depth: int = 30,
    rerank_weight: float | None = None,
    on_query: Callable[[], None] | None = None,
    keep_hits: int = 0,
) -> list[ModeResult]:
    """Search every query in ``mode``, collapse chunks to the top 100 documents, score.

    ``top_k`` chunks are asked for (and ``max(top_k, retriever.candidates)`` per hybrid
    list), enough that chunks of the same document still leave 100 distinct documents.

    Each query goes once through a :class:`rag.search.Searcher` without fallbacks. Its
    retrieved chunks (``SearchResult.retrieved``) give the mode's ranking. With a
    ``reranker``, its final chunks give a second result labelled ``<mode>+rerank``: the
    first ``rerank_depth`` retrieved chunks reordered by the reranker (its score mixed with
    the retrieval score by ``rerank_weight``, ``None`` for the reranker's own;
    ``rag.search.mix_scores``), the rest following
    in retrieved order (so Recall@100 measures the same candidates).

    A result's ``seconds`` sum the retrieval times; the reranked result's also include the
    reranker's. Query encoding done beforehand (:class:`PrecomputedQueries`) is not in them.
    With ``keep_hits``, each result keeps the first ``keep_hits`` chunk hits of every query
    (``ModeResult.hits``).

    Returns:
        The mode's result, then the reranked one when a reranker is given.

    Raises:
        APIError: an embedding API could not embed a query (no full-text fallback).
        RerankError: the reranker gave no usable scores (no retrieved-order fallback).
    """
    # rerank_candidates = top_k: exactly top_k chunks are retrieved, with or without reranker.
    searcher = Searcher(
        retriever,
        reranker,
        top_k,
        rerank_depth=rerank_depth,
        fallback=False,
        rerank_weight=rerank_weight,
    )
    seconds = {"search": 0.0, "rerank": 0.0}
    rankings: dict[str, list[str]] = {}
    reranked: dict[str, list[str]] = {}
    kept: dict[str, list[Hit]] = {}
    kept_reranked: dict[str, list[Hit]] = {}
    for qid, text in queries.items():
        if not text.strip():  # a judged query without text (CMRC2018 trial has two) finds
            retrieved = hits = []  # nothing and scores 0, as the metrics count no result
        else:
            result = searcher.search(
                text,
                top_k=top_k,
                mode=mode.search_mode,
                fusion=mode.fusion,
                rrf_k=rrf_k,
                weights=weights,
                stage_ranks=False,
            )
            retrieved, hits = result.retrieved, result.hits
            seconds["search"] += result.retrieve_seconds
            seconds["rerank"] += result.rerank_seconds
        rankings[qid] = collapse_to_documents((h.source for h in retrieved), DOC_DEPTH)
        if reranker is not None:
            reranked[qid] = collapse_to_documents((h.source for h in hits), DOC_DEPTH)
        if keep_hits:
            kept[qid] = retrieved[:keep_hits]
            kept_reranked[qid] = hits[:keep_hits]
        if on_query:
            on_query()
    results = [
        ModeResult(
            mode.value,
            mean_scores(qrels, rankings),
            len(queries),
            seconds["search"],
            rankings,
            kept,
        )
    ]
    if reranker is not None:
        results.append(
            ModeResult(
                mode.value + RERANK_SUFFIX,
                mean_scores(qrels, reranked),
                len(queries),
                seconds["search"] + seconds["rerank"],
                reranked,
                kept_reranked,
            )
        )
    return results
