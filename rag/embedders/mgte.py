"""mGTE: a dense vector and token weights from one forward pass, through pymilvus' mGTE class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from rag.embedders.base import Embeddings, l2_normalize, weighted_query_words
from rag.embedders.bge_m3 import lexical_weights_to_csr
from rag.embedders.packaged import model_languages, resolve_model
from rag.embedders.tokenizer import HFTokenCounter


class MGTEEmbedder:
    """mGTE (Zhang et al., 2024, "mGTE: Generalized Long-Context Text Representation and
    Reranking Models for Multilingual Text Retrieval", arXiv:2407.19669) through
    ``pymilvus.model``'s ``MGTEEmbeddingFunction``: the dense vector is the normalised CLS state
    (768-d for ``Alibaba-NLP/gte-multilingual-base``), a token's weight is ``relu`` of the
    model's one-logit token head, and a text's weight for a vocabulary term is the largest
    weight of its occurrences (special tokens dropped).

    The model is loaded by ``MGTEEmbeddingFunction`` (``AutoModelForTokenClassification``
    with ``trust_remote_code``: the checkpoint's own modelling code); texts go through its
    model's ``encode`` so that ``max_length`` applies (the function's own call reads up to
    8192 tokens). Its imports need only torch, scipy and transformers, all pinned, so its
    built-in ``pip install`` never runs.

    Args:
        model: ``Alibaba-NLP/gte-multilingual-base`` or a local directory with the model,
            its code and tokenizer.
        device: torch device string; fp16 only on CUDA.
        batch_size: texts per forward pass.
        max_length: tokens read per text.

    Raises:
        OSError: the model cannot be found locally and the hub cannot be reached.
    """

    def __init__(
        self,
        model: str = "Alibaba-NLP/gte-multilingual-base",
        *,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int = 512,
    ) -> None:
        from pymilvus.model.hybrid.mgte import MGTEEmbeddingFunction

        self.profile = "mgte"
        self.dense_name = self.sparse_name = model
        self.languages = model_languages(model)
        self.batch_size = batch_size
        self.max_tokens = max_length
        self.function = MGTEEmbeddingFunction(
            model_name=resolve_model(model),
            batch_size=batch_size,
            device=device,
            use_fp16=device.startswith("cuda"),
        )
        tokenizer = self.function.model.tokenizer
        self.tokenizer = HFTokenCounter(tokenizer)
        self.vocab_size = len(tokenizer)
        self.dim = int(self.function.dimensions)

    def _encode(self, texts: Sequence[str]) -> Embeddings:
        if not texts:
            return Embeddings(
                np.zeros((0, self.dim), np.float32),
                sparse.csr_array((0, self.vocab_size), dtype=np.float32),
            )
        output = self.function.model.encode(
            list(texts),
            max_length=self.max_tokens,
            batch_size=self.batch_size,
            return_dense=True,
            return_sparse=True,
        )
        dense = output["dense_embeddings"].float().cpu().numpy()
        return Embeddings(
            l2_normalize(dense), lexical_weights_to_csr(output["token_weights"], self.vocab_size)
        )

    def encode_documents(self, texts: Sequence[str]) -> Embeddings:
        """Dense ``float32 [n, dim]`` and sparse ``csr_array [n, vocab_size]`` for documents."""
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        """Queries are encoded like documents (mGTE has no query instruction)."""
        return self._encode(texts)

    def query_terms(self, query: str) -> list[str]:
        """The words of ``query`` that hold a token with a positive weight (mGTE weighs the
        query's own tokens only), in query order, each once; see ``Embedder.query_terms``."""
        vector = self.encode_queries([query]).sparse
        return weighted_query_words(self.function.model.tokenizer, query, vector)
