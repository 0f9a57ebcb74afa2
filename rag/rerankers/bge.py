"""Reranking with a BGE reranker (``BAAI/bge-reranker-v2-m3``) through FlagEmbedding."""

from __future__ import annotations

import numpy as np

from rag.embedders.packaged import resolve_model
from rag.embedders.precision import autocast_dtype, forward_context
from rag.rerankers.base import ScoringReranker
from rag.settings import Precision

DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"


class BGEReranker(ScoringReranker):
    """Scores (query, passage) pairs with ``FlagEmbedding.FlagReranker.compute_score``.

    The score is the model's raw logit (``normalize=False``; FlagEmbedding's ``normalize``
    would map it through a sigmoid, which keeps the order).

    Args:
        model: a hub id (``BAAI/bge-reranker-v2-m3``, ``BAAI/bge-reranker-base``, ...) or a
            local directory holding an encoder sequence-classification model with one label.
        device: torch device string; fp16 is used only on CUDA.
        batch_size: pairs per forward pass.
        max_length: tokens read per pair (FlagEmbedding truncates the passage), at most the
            tokenizer's ``model_max_length``.
        precision: on CPU, ``auto`` / ``bfloat16`` run the forward passes under bfloat16
            autocast (``rag.embedders.precision``); ``float32`` as the model is.

    Raises:
        OSError: the model cannot be found locally and the hub cannot be reached.
    """

    name = "bge-reranker"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 512,
        precision: Precision = Precision.FLOAT32,
    ) -> None:
        from FlagEmbedding import FlagReranker

        self.model_name = model
        self.model = FlagReranker(
            resolve_model(model),
            use_fp16=device.startswith("cuda"),
            devices=device,
            batch_size=batch_size,
            max_length=max_length,
        )
        self.model.max_length = min(max_length, self.model.tokenizer.model_max_length)
        self.autocast = autocast_dtype(precision, device)

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """``FlagReranker.compute_score`` of ``[query, passage]`` pairs: ``float32 [n]``."""
        with forward_context(self.autocast):
            scores = self.model.compute_score([[query, passage] for passage in passages])
        return np.asarray(scores, dtype=np.float32)
