"""Embedders: text → dense vector + sparse vector (lexical weights), chosen by profile.

A profile is one hybrid function (``bge-m3``) or a dense function paired with a sparse
function (``minilm-splade``). ``build_embedder(settings)`` returns the profile's embedder.
"""

from __future__ import annotations

from rag.embedders.base import Embedder, Embeddings
from rag.settings import Settings

PROFILES: dict[str, str] = {
    "minilm-splade": "all-MiniLM-L6-v2 dense (384) + SPLADE-tiny sparse (30522); packaged "
    "weights, no download",
    "bge-m3": "BGE-M3 dense (1024) + lexical weights (250002) in one pass (BAAI/bge-m3 or a "
    "local path)",
}


class UnknownProfileError(ValueError):
    """The settings name a profile that does not exist."""


def configure_threads(num_threads: int) -> None:
    """Set torch's intra-op thread count and silence model-loading progress bars."""
    import torch
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(num_threads)
    transformers_logging.disable_progress_bar()


def build_embedder(settings: Settings) -> Embedder:
    """The embedder of ``settings.profile``, with its models loaded.

    Raises:
        UnknownProfileError: the profile is not one of ``PROFILES``.
        OSError: a model cannot be found locally and the hub cannot be reached.
    """
    configure_threads(settings.num_threads)
    if settings.profile == "bge-m3":
        from rag.embedders.bge_m3 import BGEM3Embedder

        return BGEM3Embedder(
            settings.bge_m3_model,
            device=settings.device,
            batch_size=settings.batch_size,
            max_length=settings.max_length,
        )
    if settings.profile == "minilm-splade":
        from rag.embedders.hybrid import DenseSparseEmbedder
        from rag.embedders.sentence_transformer import SentenceTransformerDense
        from rag.embedders.splade import SpladeSparse
        from rag.embedders.tokenizer import HFTokenCounter

        dense = SentenceTransformerDense(
            settings.dense_model,
            device=settings.device,
            batch_size=settings.batch_size,
            max_length=settings.max_length,
        )
        sparse = SpladeSparse(
            settings.sparse_model,
            device=settings.device,
            batch_size=settings.batch_size,
            max_length=settings.max_length,
        )
        return DenseSparseEmbedder(
            settings.profile,
            dense,
            sparse,
            HFTokenCounter(dense.tokenizer),
            min(dense.max_tokens, sparse.max_tokens),
        )
    raise UnknownProfileError(
        f"unknown embedder profile {settings.profile!r}; choose one of {', '.join(PROFILES)}"
    )


__all__ = ["PROFILES", "Embedder", "Embeddings", "UnknownProfileError", "build_embedder"]
