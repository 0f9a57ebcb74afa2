"""The one settings object, read from the environment and `.env` (keys are prefixed ``RAG_``)."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = PROJECT_ROOT / "data" / "milvus.db"


class SearchMode(StrEnum):
    """Which vector fields a query searches."""

    HYBRID = "hybrid"
    DENSE = "dense"
    SPARSE = "sparse"
    BM25 = "bm25"


class Fusion(StrEnum):
    """How the dense and sparse result lists are fused: by Milvus ``hybrid_search``
    (``rrf``: ``RRFRanker``; ``weighted``: ``WeightedRanker``) or here (``convex``: weighted
    sum of normalised scores, ``rag.fusion``)."""

    RRF = "rrf"
    WEIGHTED = "weighted"
    CONVEX = "convex"


class Normalisation(StrEnum):
    """How the convex fusion normalises each list's scores (``rag.fusion``)."""

    FLOOR_CEILING = "floor-ceiling"  # (s − min) / max(best, q·q); fitted BM25: min-max
    MIN_MAX = "min-max"  # (s − min) / (max − min)


# Chosen on seven English BEIR-format sets (docs/EVALUATION.md, "Fusion and weights"
# and "Floor–ceiling normalisation"): convex fusion of floor–ceiling normalised
# scores, dense 0.6 / sparse 0.4, beats dense, sparse and BM25 on all seven, with lists of 300
# and of 50 candidates alike.
DEFAULT_FUSION = Fusion.CONVEX
DEFAULT_WEIGHTS = (0.6, 0.4)  # (dense, sparse)
DEFAULT_NORMALISATION = Normalisation.FLOOR_CEILING
# A query's sparse vector searched with its 24 largest lexical weights: on the same seven
# sets the default hybrid's nDCG@10 moves by -0.0014 to +0.0114 (16 terms lose up to 0.0043),
# and the sparse search at 100k chunks takes 5.5 ms instead of 8.0 (docs/EVALUATION.md,
# "Sparse query terms"; docs/BENCHMARKS.md).
DEFAULT_SPARSE_QUERY_TERMS = 24
# A chunk's convex score is (1 - w) · its own fused score + w · its section's fused score
# (the section row's dense and sparse lists, fused alike). w = 0.6 lies inside the Milvus FAQ
# dev split's English plateau (0.5 to 0.7), lifts its 13 languages with the multilingual
# profile, and leaves SciFact and NFCorpus within 0.005 of w = 0 (docs/EVALUATION.md,
# "Section rows").
DEFAULT_SECTION_WEIGHT = 0.6


class Precision(StrEnum):
    """Number format of local models' forward passes (see ``rag.embedders.precision``)."""

    AUTO = "auto"  # bfloat16 where the CPU multiplies bfloat16 natively, else float32
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


class Settings(BaseSettings):
    """Every setting of the product, each one a ``RAG_<NAME>`` environment variable.

    `.env.example` lists every key with its default. Values are validated on construction
    (``pydantic.ValidationError`` on a bad value).
    """

    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Storage
    milvus_uri: str = Field(
        str(DEFAULT_DB),
        description="A Milvus Lite db path (a directory ending in .db) or a server URL "
        "such as http://127.0.0.1:19530.",
    )
    milvus_token: SecretStr | None = Field(None, description="Token for a secured server.")
    collection: str = "docs"
    dense_index: str = Field(
        "FLAT", description="Dense index of new collections: FLAT, HNSW or IVF_FLAT."
    )
    bm25_analyzer: str = Field(
        "standard",
        description="Tokenizer of Milvus's full-text BM25 (the bm25 mode) in new collections: "
        "standard (splits on spaces and punctuation) or jieba (dictionary word segmentation "
        "for Chinese).",
    )

    # Embedding
    profile: str = Field("minilm-splade", description="Embedder profile; see rag.embedders.")
    dense_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    sparse_model: str = "splade-tiny"
    bge_m3_model: str = "BAAI/bge-m3"
    max_length: int = Field(512, ge=16, description="Max tokens a model reads per text.")
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    num_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    query_threads: int = Field(
        1,
        ge=1,
        description="Torch threads in a process that only searches (app, rag search/answer): "
        "one short query gains little from a second thread and runs 5-15x slower with two "
        "when another process holds a core (docs/BENCHMARKS.md).",
    )
    dense_query_int8: bool = Field(
        True,
        description="Encode all-MiniLM-L6-v2's queries on its packaged int8 ONNX export "
        "(about half the torch model's time per query, the same nDCG@10: docs/EVALUATION.md); "
        "documents stay on torch, and other dense models ignore it.",
    )
    precision: Precision = Field(
        Precision.AUTO,
        description="Forward passes of sentence-transformers and SPLADE models and of the "
        "cross-encoder and BGE rerankers: auto, float32 or bfloat16 (autocast).",
    )

    # Embedding functions (rag.embedders.registry; `python -m rag embedders` lists them).
    # `dense` and `sparse` name a composition and, when given, override `profile`.
    dense: str | None = Field(None, description="Dense function name (with `sparse`).")
    sparse: str | None = Field(None, description="Sparse function name (with `dense`).")
    instructor_model: str = "hkunlp/instructor-large"
    instructor_query_instruction: str = "Represent the question for retrieval: "
    instructor_document_instruction: str = "Represent the document for retrieval: "
    mgte_model: str = "Alibaba-NLP/gte-multilingual-base"
    bm25_k1: float = Field(1.5, gt=0, description="BM25 term-frequency saturation.")
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 document-length normalisation.")
    bm25_epsilon: float = Field(0.25, ge=0, description="Floor of negative IDFs (x mean IDF).")
    bm25_refit_drift: float = Field(
        0.2,
        gt=0,
        description="Refit BM25 after an ingest once the chunks written or deleted since its "
        "fit exceed this fraction of the chunks it was fitted on.",
    )
    # Embedding APIs: keys only from RAG_<PROVIDER>_API_KEY (or .env); base URLs for proxies,
    # OpenAI-compatible servers and tests. Jina's key and URL are shared with the reranker.
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "text-embedding-3-small"
    voyage_api_key: SecretStr | None = None
    voyage_base_url: str = "https://api.voyageai.com/v1"
    voyage_model: str = "voyage-3.5"
    jina_model: str = "jina-embeddings-v3"
    cohere_api_key: SecretStr | None = None
    cohere_base_url: str = "https://api.cohere.com/v2"
    cohere_model: str = "embed-english-v3.0"
    mistral_api_key: SecretStr | None = None
    mistral_base_url: str = "https://api.mistral.ai/v1"
    mistral_model: str = "mistral-embed"
    nomic_api_key: SecretStr | None = None
    nomic_base_url: str = "https://api-atlas.nomic.ai/v1"
    nomic_model: str = "nomic-embed-text-v1.5"
    retry_backoff: float = Field(
        1.0, ge=0, description="Seconds before the first retry of an API request; doubles."
    )

    # Chunking (in tokens of the embedder's tokenizer)
    chunk_size: int = Field(200, ge=16)
    chunk_overlap: int = Field(32, ge=0)
    section_tokens: int = Field(
        512,
        ge=0,
        description="Tokens of a section's text in its section row, a row embedded and "
        "searched beside the chunks (rag.chunking); 0: no section rows.",
    )
    max_file_mb: float = Field(50.0, gt=0)

    # Retrieval
    top_k: int = Field(10, ge=1)
    per_source: int = Field(
        1,
        ge=0,
        description="Most chunks of one source (file) among the hits while other files match; "
        "0: no cap (docs/EVALUATION.md, 'Page-level results').",
    )
    candidates: int = Field(50, ge=1, description="Hits each AnnSearchRequest returns.")
    section_weight: float = Field(
        DEFAULT_SECTION_WEIGHT,
        ge=0,
        le=1,
        description="Share of a chunk's hybrid (convex) score that its section's score "
        "gives (rag.retriever); 0: section rows are not searched.",
    )
    sparse_query_terms: int = Field(
        DEFAULT_SPARSE_QUERY_TERMS,
        ge=0,
        description="Search with only the N largest lexical weights of a query's sparse "
        "vector (0: all); a sparse search's time grows with the query's terms.",
    )
    normalisation: Normalisation = Field(
        DEFAULT_NORMALISATION,
        description="Convex fusion's score normalisation: floor-ceiling ((s − min) / the best "
        "score, or the query's own q·q for learned sparse) or min-max.",
    )
    mode: SearchMode = SearchMode.HYBRID
    fusion: Fusion = DEFAULT_FUSION
    rrf_k: int = Field(60, ge=1)
    weights: Annotated[tuple[float, float], NoDecode] = Field(
        DEFAULT_WEIGHTS,
        description="Dense and sparse weights of weighted and convex fusion: W_DENSE,W_SPARSE "
        "(as --weights takes them) or a JSON list.",
    )

    # Reranking (see rag.rerankers)
    reranker: str = Field(
        "auto",
        description="auto (maxsim with a sentence-transformers or multilingual-e5 dense model, "
        "else none), none, cross-encoder, bge-reranker, jina, bge-m3-colbert or maxsim.",
    )
    reranker_model: str | None = Field(
        None,
        description="The reranker's model (hub id, local path or Jina model); None: "
        "the reranker's default.",
    )
    rerank_candidates: int = Field(30, ge=1, description="Hits retrieved before reranking.")
    rerank_weight: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of the reranker's score in the final order, mixed with the "
        "retrieval score after min-max scaling of both (rag.search.mix_scores); 1: the "
        "reranker alone. None: the reranker's own (rag.rerankers.RERANK_WEIGHTS).",
    )
    jina_api_key: SecretStr | None = Field(None, description="Jina AI API key (jina reranker).")
    jina_base_url: str = "https://api.jina.ai/v1"
    request_timeout: float = Field(30.0, gt=0, description="Seconds per API request.")
    max_retries: int = Field(3, ge=0, description="Retries of a failed API request.")

    # Answer generation (any OpenAI-compatible endpoint)
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = Field(
        None, description="Model id; None: the first model the endpoint lists."
    )
    llm_timeout: float = Field(
        60.0, gt=0, description="Seconds to connect to the LLM and between streamed chunks."
    )
    llm_max_tokens: int = Field(256, ge=1, description="Most tokens generated per answer.")
    llm_temperature: float = Field(0.0, ge=0, le=2)
    llm_passages: int = Field(
        8,
        ge=1,
        description="Best hits given to the LLM, each seeding one passage (docs/EVALUATION.md, "
        "'Context for the answer').",
    )
    context_tokens: int = Field(
        2000,
        ge=0,
        description="Tokens (the embedder's) of context for the LLM: the passages of the "
        "best hits grow with their neighbouring chunks of the same section up to this "
        "budget (rag.context); 0: the bare hits.",
    )

    @field_validator("weights", mode="before")
    @classmethod
    def _weights_from_text(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_weights(value.strip().removeprefix("[").removesuffix("]"))
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        if min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        return self


def parse_weights(value: str | None) -> tuple[float, float] | None:
    """``"W_DENSE,W_SPARSE"`` (as the CLIs take it) as a pair of floats; ``None`` stays None.

    Raises:
        ValueError: not two comma-separated numbers.
    """
    if value is None:
        return None
    try:
        dense, sparse = (float(part) for part in value.split(","))
    except ValueError:
        raise ValueError("expected two numbers: W_DENSE,W_SPARSE") from None
    return dense, sparse


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and `.env`."""
    return Settings()
