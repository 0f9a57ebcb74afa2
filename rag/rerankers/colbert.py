"""Reranking with BGE-M3's multi-vector (ColBERT-style late interaction) scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rag.embedders.packaged import resolve_model
from rag.rerankers.base import ScoringReranker

if TYPE_CHECKING:
    from FlagEmbedding import BGEM3FlagModel


class BGEM3ColbertReranker(ScoringReranker):
    """Scores passages by BGE-M3's multi-vector relevance, as the BGE-M3 paper reranks
    (Chen et al., 2024, "BGE M3-Embedding", arXiv:2402.03216, the multi-vector score).

    Query and passages are encoded with ``return_colbert_vecs=True``: one L2-normalised
    vector per token after ``<s>`` (``float32 [tokens, 1024]`` for ``BAAI/bge-m3``). The
    score is FlagEmbedding's ``BGEM3FlagModel.colbert_score``,
    ``s = 1/N * sum_i max_j q_i . p_j`` over the ``N`` query vectors: ColBERT's MaxSim
    (Khattab & Zaharia, SIGIR 2020) averaged instead of summed, so it lies in [-1, 1].

    Args:
        model: a loaded ``BGEM3FlagModel`` (the ``bge-m3`` profile's embedder shares its).
        batch_size: passages per forward pass.
    """

    name = "bge-m3-colbert"

    def __init__(self, model: BGEM3FlagModel, *, batch_size: int = 16) -> None:
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        model: str = "BAAI/bge-m3",
        *,
        device: str = "cpu",
        batch_size: int = 16,
        max_length: int = 512,
    ) -> BGEM3ColbertReranker:
        """Load ``model`` (``BAAI/bge-m3`` or a local directory with ``colbert_linear.pt``).

        Raises:
            OSError: the model cannot be found locally and the hub cannot be reached.
        """
        from FlagEmbedding import BGEM3FlagModel

        flag_model = BGEM3FlagModel(
            resolve_model(model),
            use_fp16=device.startswith("cuda"),
            devices=device,
            batch_size=batch_size,
            query_max_length=max_length,
            passage_max_length=max_length,
        )
        return cls(flag_model, batch_size=batch_size)

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """``colbert_score(query vectors, passage vectors)`` per passage: ``float32 [n]``."""
        only_colbert = {"return_dense": False, "return_sparse": False, "return_colbert_vecs": True}
        query_vecs = self.model.encode_queries([query], batch_size=self.batch_size, **only_colbert)[
            "colbert_vecs"
        ][0]
        passage_vecs = self.model.encode_corpus(
            passages, batch_size=self.batch_size, **only_colbert
        )["colbert_vecs"]
        return np.array(
            [float(self.model.colbert_score(query_vecs, p)) for p in passage_vecs], np.float32
        )
