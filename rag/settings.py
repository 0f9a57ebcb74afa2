"""The one settings object, read from the environment and `.env` (keys are prefixed ``RAG_``)."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = PROJECT_ROOT / "data" / "milvus.db"


class SearchMode(StrEnum):
    """Which vector fields a query searches."""

    HYBRID = "hybrid"
    DENSE = "dense"
    SPARSE = "sparse"
    BM25 = "bm25"


class Fusion(StrEnum):
    """How Milvus fuses the dense and sparse result lists in ``hybrid_search``."""

    RRF = "rrf"
    WEIGHTED = "weighted"


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
    dense_index: str = Field("FLAT", description="Dense index type: FLAT or HNSW.")

    # Embedding
    profile: str = Field("minilm-splade", description="Embedder profile; see rag.embedders.")
    dense_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    sparse_model: str = "splade-tiny"
    bge_m3_model: str = "BAAI/bge-m3"
    max_length: int = Field(512, ge=16, description="Max tokens a model reads per text.")
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    num_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)

    # Chunking (in tokens of the embedder's tokenizer)
    chunk_size: int = Field(200, ge=16)
    chunk_overlap: int = Field(32, ge=0)
    max_file_mb: float = Field(50.0, gt=0)

    # Retrieval
    top_k: int = Field(10, ge=1)
    candidates: int = Field(50, ge=1, description="Hits each AnnSearchRequest returns.")
    mode: SearchMode = SearchMode.HYBRID
    fusion: Fusion = Fusion.RRF
    rrf_k: int = Field(60, ge=1)
    weights: tuple[float, float] = (0.5, 0.5)

    # Answer generation (any OpenAI-compatible endpoint)
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        if min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and `.env`."""
    return Settings()
