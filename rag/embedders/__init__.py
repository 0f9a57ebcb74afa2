"""Embedders: text → dense vector + sparse vector (lexical weights), chosen by profile.

A profile is one hybrid function (``bge-m3``, ``mgte``) or a dense function paired with a
sparse function (``minilm-splade``, ``default+bm25``, ``openai+splade``…); the functions are
listed in :mod:`rag.embedders.registry`. ``build_embedder(settings)`` returns the profile's
embedder.
"""

from __future__ import annotations

from rag.embedders.base import Embedder, Embeddings
from rag.embedders.registry import (
    FUNCTIONS,
    PROFILES,
    Composition,
    UnknownProfileError,
    resolve,
)
from rag.settings import Settings


def configure_threads(num_threads: int) -> None:
    """Set torch's intra-op thread count and silence model-loading progress bars."""
    import torch
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(num_threads)
    transformers_logging.disable_progress_bar()


def build_embedder(settings: Settings, composition: Composition | None = None) -> Embedder:
    """The embedder of ``composition`` (default: the one the settings select), its models
    loaded. Chunks are measured with the dense function's tokenizer, else the sparse
    function's, else BERT WordPiece (``rag.embedders.tokenizer.fallback_token_counter``).

    With ``settings.dense_query_int8`` (the default), all-MiniLM-L6-v2 encodes queries on its
    int8 ONNX export (``rag.embedders.onnx_int8``); other dense models are left as they are.

    Raises:
        UnknownProfileError: the settings name no known profile or composition.
        APIAuthError: an API function without its key.
        OSError: a model cannot be found locally and the hub cannot be reached.
    """
    from rag.embedders.hybrid import DenseSparseEmbedder
    from rag.embedders.tokenizer import HFTokenCounter, fallback_token_counter

    composition = composition or resolve(settings)
    configure_threads(settings.num_threads)
    if composition.hybrid:
        embedder = FUNCTIONS[composition.hybrid].build(settings)
        embedder.profile = composition.name
        return embedder
    dense = FUNCTIONS[composition.dense].build(settings)
    if settings.dense_query_int8:
        from rag.embedders.onnx_int8 import Int8QueryDense, has_int8_export

        if has_int8_export(dense):
            dense = Int8QueryDense(dense, settings.query_threads, settings.batch_size)
    sparse = FUNCTIONS[composition.sparse].build(settings)
    tokenizers = (getattr(dense, "tokenizer", None), getattr(sparse, "tokenizer", None))
    tokenizer = next((t for t in tokenizers if t is not None), None)
    return DenseSparseEmbedder(
        composition.name,
        dense,
        sparse,
        HFTokenCounter(tokenizer) if tokenizer is not None else fallback_token_counter(),
        min(dense.max_tokens, sparse.max_tokens),
    )


__all__ = [
    "FUNCTIONS",
    "PROFILES",
    "Composition",
    "Embedder",
    "Embeddings",
    "UnknownProfileError",
    "build_embedder",
    "configure_threads",
]
