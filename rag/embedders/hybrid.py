"""An embedder made of one dense encoder and one sparse encoder."""

from __future__ import annotations

from collections.abc import Sequence

from rag.embedders.base import DenseEncoder, Embeddings, SparseEncoder, TokenCounter


class DenseSparseEmbedder:
    """Pairs a dense and a sparse encoder behind the :class:`~rag.embedders.base.Embedder`
    protocol.

    Args:
        profile: the profile name recorded in the collection.
        dense: the dense encoder; its tokenizer is the one chunks are measured with.
        sparse: the sparse encoder.
        tokenizer: token offsets for chunking (normally the dense model's tokenizer).
        max_tokens: the smallest input limit of the two models.
    """

    def __init__(
        self,
        profile: str,
        dense: DenseEncoder,
        sparse: SparseEncoder,
        tokenizer: TokenCounter,
        max_tokens: int,
    ) -> None:
        self.profile = profile
        self.dense = dense
        self.sparse = sparse
        self.dense_name = dense.name
        self.sparse_name = sparse.name
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.languages: tuple[str, ...] = getattr(dense, "languages", ())

    @property
    def dim(self) -> int:
        """The dense vector dimension (an API function learns it from its first answer)."""
        return self.dense.dim

    @property
    def vocab_size(self) -> int:
        """The sparse vocabulary size (a fitted function's changes with each fit)."""
        return self.sparse.vocab_size

    def encode_documents(self, texts: Sequence[str]) -> Embeddings:
        """Dense ``float32 [n, dim]`` and sparse ``csr_array [n, vocab_size]`` for documents."""
        return Embeddings(self.dense.encode_documents(texts), self.sparse.encode_documents(texts))

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        """Dense ``float32 [n, dim]`` and sparse ``csr_array [n, vocab_size]`` for queries."""
        return Embeddings(self.dense.encode_queries(texts), self.sparse.encode_queries(texts))

    def query_terms(self, query: str) -> list[str]:
        """The sparse encoder's :meth:`~rag.embedders.base.SparseEncoder.query_terms` (the
        dense side weighs no terms)."""
        return self.sparse.query_terms(query)
