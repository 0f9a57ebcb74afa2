"""The embedder protocol: documents and queries in, a dense matrix and a sparse matrix out;
and which words of a query its sparse vector weighs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
from scipy import sparse


class Embeddings(NamedTuple):
    """The two vectors of every text, row-aligned.

    Attributes:
        dense: ``float32`` array of shape ``[n, dim]``, L2-normalised, so inner product is cosine.
        sparse: ``scipy.sparse.csr_array`` of shape ``[n, vocab_size]``, ``float32``,
            non-negative lexical weights; a row may be empty (all zero).
    """

    dense: np.ndarray
    sparse: sparse.csr_array


class TokenCounter(Protocol):
    """What the chunker needs of a tokenizer: token offsets of a text, without specials."""

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character ``(start, end)`` offsets of each token of ``text``, in order."""
        ...


@runtime_checkable
class DenseEncoder(Protocol):
    """A dense embedding function (``dim`` floats per text)."""

    name: str
    dim: int

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class SparseEncoder(Protocol):
    """A sparse embedding function (lexical weights over a ``vocab_size`` vocabulary)."""

    name: str
    vocab_size: int

    def encode_documents(self, texts: Sequence[str]) -> sparse.csr_array: ...

    def encode_queries(self, texts: Sequence[str]) -> sparse.csr_array: ...

    def query_terms(self, query: str) -> list[str]:
        """The words of ``query`` that carry lexical weight in its sparse query vector; see
        :meth:`Embedder.query_terms`."""
        ...


@runtime_checkable
class FittedSparseEncoder(SparseEncoder, Protocol):
    """A sparse function whose weights are statistics fitted on the corpus (BM25).

    Its vocabulary and weights change with every fit, so documents and queries must be
    encoded with the same fitted parameters: ``fingerprint`` names them (``""`` until fitted
    or loaded) and the collection records it (see ``rag.store.fitted``).
    """

    fingerprint: str

    def fit(self, texts: Sequence[str]) -> None:
        """Fit the parameters on ``texts``, the corpus."""
        ...

    def save(self, path: str) -> None:
        """Write the fitted parameters to ``path``."""
        ...

    def load(self, path: str) -> None:
        """Read parameters written by :meth:`save`."""
        ...

    def defer(self) -> None:
        """Until the next fit, encode documents as empty rows instead of refusing."""
        ...

    def stale(self) -> str | None:
        """Why the loaded parameters differ from the configured ones (``None``: they do not)."""
        ...


class Embedder(Protocol):
    """Dense and sparse vectors for documents and queries, and the tokenizer to chunk with.

    ``encode_documents`` and ``encode_queries`` may encode differently (instructions, query
    expansion); both return :class:`Embeddings` with ``len(texts)`` rows.
    """

    profile: str
    dense_name: str
    sparse_name: str
    dim: int
    vocab_size: int
    max_tokens: int
    tokenizer: TokenCounter
    # The languages the dense model's card declares (``rag.embedders.packaged.model_languages``);
    # () when unknown. A search tells the user when a question is in none of them.
    languages: tuple[str, ...]

    def encode_documents(self, texts: Sequence[str]) -> Embeddings: ...

    def encode_queries(self, texts: Sequence[str]) -> Embeddings: ...

    def query_terms(self, query: str) -> list[str]:
        """The words of ``query`` that carry lexical weight in its sparse query vector: the
        words its sparse search matches on.

        A word is a ``\\w+`` run of the query, as the query spells it (a run of a script
        written without spaces, such as Chinese, is one word); it counts when one of its
        tokens (SPLADE, BGE-M3, mGTE) or analyzed terms (BM25) has a positive weight in
        ``encode_queries([query]).sparse``. Expansion terms that a learned sparse model adds
        to the vector are not words of the query and are left out. Returns the words in
        query order, each once; ``[]`` for an empty vector.

        Raises:
            NotFittedError: a BM25 sparse side that is neither fitted nor loaded.
        """
        ...


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as ``float32``."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


_WORD = re.compile(r"\w+")


def words_at(text: str, spans: Iterable[tuple[int, int]]) -> list[str]:
    """The ``\\w+`` words of ``text`` that overlap any of the character spans
    ``(start, end)`` (a weighted token's or term's offsets), in text order, each once."""
    spans = [(start, end) for start, end in spans if end > start]
    words = [
        match.group()
        for match in _WORD.finditer(text)
        if any(start < match.end() and match.start() < end for start, end in spans)
    ]
    return list(dict.fromkeys(words))


def weighted_query_words(tokenizer, query: str, vector: sparse.csr_array) -> list[str]:
    """The words of ``query`` (:func:`words_at`) that hold a token whose vocabulary id has a
    positive weight in row 0 of ``vector`` (``csr_array [1, vocab_size]``), for a learned
    sparse model whose vocabulary is ``tokenizer``'s (a Hugging Face fast tokenizer, which
    gives character offsets).

    Raises:
        ValueError: the tokenizer is a slow (Python) one, without offsets.
    """
    if not tokenizer.is_fast:
        raise ValueError(f"{type(tokenizer).__name__} gives no character offsets: use a fast one")
    start, end = vector.indptr[0], vector.indptr[1]
    weighted = set(vector.indices[start:end][vector.data[start:end] > 0].tolist())
    encoding = tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)
    pairs = zip(encoding["input_ids"], encoding["offset_mapping"], strict=True)
    return words_at(query, (span for token, span in pairs if token in weighted))


def length_sorted_batches(
    texts: Sequence[str], batch_size: int
) -> tuple[list[list[str]], np.ndarray]:
    """``texts`` in batches of at most ``batch_size`` and similar length (shortest first), so
    that a padded forward pass wastes little, and the ``int64 [len(texts)]`` permutation that
    puts the batches' concatenated rows back in input order (``rows[restore]``)."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    batches = [
        [texts[i] for i in order[start : start + batch_size]]
        for start in range(0, len(texts), batch_size)
    ]
    return batches, np.argsort(order, kind="stable")


def query_encoders(embedder: object) -> tuple[DenseEncoder, SparseEncoder] | None:
    """The embedder's dense and sparse encoders when each encodes on its own (a
    ``DenseSparseEmbedder``), so a query's two vectors can be made concurrently; ``None``
    when one pass gives both (BGE-M3, mGTE)."""
    dense = getattr(embedder, "dense", None)
    sparse_encoder = getattr(embedder, "sparse", None)
    if isinstance(dense, DenseEncoder) and isinstance(sparse_encoder, SparseEncoder):
        return dense, sparse_encoder
    return None


def fitted_sparse(embedder: object) -> FittedSparseEncoder | None:
    """The embedder's sparse function when it is fitted on the corpus, else ``None``."""
    sparse_encoder = getattr(embedder, "sparse", None)
    return sparse_encoder if isinstance(sparse_encoder, FittedSparseEncoder) else None
