"""Reranking with a sentence-transformers ``CrossEncoder`` (query and passage read jointly)."""

from __future__ import annotations

import numpy as np

from rag.embedders.packaged import resolve_model
from rag.embedders.precision import autocast_dtype, forward_context
from rag.rerankers.base import ScoringReranker
from rag.settings import Precision

DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L-6-v2"


class CrossEncoderReranker(ScoringReranker):
    """Scores (query, passage) pairs with ``sentence_transformers.CrossEncoder.predict``.

    The score is the model's output after its own activation (what ``predict`` returns:
    the activation saved with the model, else a sigmoid for one-label models); its order is
    the order of the raw logits.

    Args:
        model: a hub id (``cross-encoder/ms-marco-MiniLM-L-6-v2``,
            ``BAAI/bge-reranker-v2-m3``, ...) or a local directory.
        device: torch device string.
        batch_size: pairs per forward pass.
        max_length: tokens read per pair (query + passage; longer pairs are truncated), at
            most the model's own limit.
        precision: ``auto`` / ``bfloat16`` run the forward passes under bfloat16 autocast
            (``rag.embedders.precision``); ``float32`` as the model is.

    Raises:
        OSError: the model cannot be found locally and the hub cannot be reached.
    """

    name = "cross-encoder"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 512,
        precision: Precision = Precision.FLOAT32,
    ) -> None:
        from sentence_transformers import CrossEncoder

        self.model_name = model
        self.batch_size = batch_size
        self.model = CrossEncoder(resolve_model(model), device=device)
        self.model.max_seq_length = min(max_length, self.model.max_seq_length)
        self.autocast = autocast_dtype(precision, device)

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """``CrossEncoder.predict`` of ``(query, passage)`` pairs: ``float32 [n]``."""
        with forward_context(self.autocast):
            scores = self.model.predict(
                [(query, passage) for passage in passages],
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.asarray(scores, dtype=np.float32)
