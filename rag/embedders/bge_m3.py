"""BGE-M3: dense vector and lexical weights from one forward pass, through FlagEmbedding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from rag.embedders.base import Embeddings, l2_normalize, weighted_query_words
from rag.embedders.packaged import model_languages, resolve_model
from rag.embedders.tokenizer import HFTokenCounter


def lexical_weights_to_csr(
    lexical_weights: Sequence[dict[str, float]], vocab_size: int
) -> sparse.csr_array:
    """BGE-M3 ``lexical_weights`` (one ``{token_id: weight}`` dict per text; ids as strings)
    as a ``float32 csr_array [n, vocab_size]``.

    Raises:
        ValueError: a token id is outside ``[0, vocab_size)``.
    """
    indptr, indices, values = [0], [], []
    for weights in lexical_weights:
        for token_id, weight in weights.items():
            token = int(token_id)
            if not 0 <= token < vocab_size:
                raise ValueError(f"token id {token} outside vocabulary of size {vocab_size}")
            if weight > 0:
                indices.append(token)
                values.append(float(weight))
        indptr.append(len(indices))
    matrix = sparse.csr_array(
        (np.asarray(values, np.float32), np.asarray(indices, np.int64), np.asarray(indptr)),
        shape=(len(lexical_weights), vocab_size),
    )
    matrix.sum_duplicates()
    return matrix


class BGEM3Embedder:
    """BGE-M3 (Chen et al., 2024, "BGE M3-Embedding", arXiv:2402.03216) through
    ``FlagEmbedding.BGEM3FlagModel``: a 1024-d dense vector (CLS pooling) and lexical weights
    over the XLM-RoBERTa vocabulary (250002 terms) from one forward pass.

    Args:
        model: ``BAAI/bge-m3`` (hub id) or a local directory holding the model, its tokenizer,
            ``sparse_linear.pt`` and ``colbert_linear.pt``.
        device: torch device string; fp16 is used only on CUDA.
        batch_size: texts per forward pass.
        max_length: tokens read per text (BGE-M3 reads up to 8192; default 512).

    Raises:
        OSError: the model cannot be found locally and the hub cannot be reached.
    """

    def __init__(
        self,
        model: str = "BAAI/bge-m3",
        *,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int = 512,
    ) -> None:
        from FlagEmbedding import BGEM3FlagModel

        self.profile = "bge-m3"
        self.dense_name = self.sparse_name = model
        self.languages = model_languages(model)
        self.batch_size = batch_size
        self.max_tokens = max_length
        self.model = BGEM3FlagModel(
            resolve_model(model),
            use_fp16=device.startswith("cuda"),
            devices=device,
            batch_size=batch_size,
            query_max_length=max_length,
            passage_max_length=max_length,
            return_dense=True,
            return_sparse=True,
        )
        self.tokenizer = HFTokenCounter(self.model.tokenizer)
        self.vocab_size = len(self.model.tokenizer)
        self.dim = int(self.model.model.model.config.hidden_size)

    def _embeddings(self, output: dict) -> Embeddings:
        return Embeddings(
            l2_normalize(output["dense_vecs"]),
            lexical_weights_to_csr(output["lexical_weights"], self.vocab_size),
        )

    def _empty(self) -> Embeddings:
        return Embeddings(
            np.zeros((0, self.dim), np.float32),
            sparse.csr_array((0, self.vocab_size), dtype=np.float32),
        )

    def encode_documents(self, texts: Sequence[str]) -> Embeddings:
        """Dense ``float32 [n, dim]`` and sparse ``csr_array [n, 250002]`` for documents."""
        if not texts:
            return self._empty()
        out = self.model.encode_corpus(
            list(texts), batch_size=self.batch_size, return_dense=True, return_sparse=True
        )
        return self._embeddings(out)

    def encode_queries(self, texts: Sequence[str]) -> Embeddings:
        """Dense ``float32 [n, dim]`` and sparse ``csr_array [n, 250002]`` for queries."""
        if not texts:
            return self._empty()
        out = self.model.encode_queries(
            list(texts), batch_size=self.batch_size, return_dense=True, return_sparse=True
        )
        return self._embeddings(out)

    def query_terms(self, query: str) -> list[str]:
        """The words of ``query`` that hold a token with a positive lexical weight (BGE-M3
        weighs the query's own tokens only), in query order, each once; see
        ``Embedder.query_terms``."""
        vector = self.encode_queries([query]).sparse
        return weighted_query_words(self.model.tokenizer, query, vector)
