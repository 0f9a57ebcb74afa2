"""Reranking by late interaction over a dense model's own token vectors (zero-shot MaxSim)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from rag.embedders.packaged import resolve_model
from rag.embedders.precision import autocast_dtype, forward_context
from rag.rerankers.base import ScoringReranker
from rag.settings import Precision

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Passages per forward pass and torch thread (MaxSimReranker's batch_size None): the fastest
# of 4, 8 and 16 on one thread, and 16 the fastest on two (docs/BENCHMARKS.md, "Reranking").
PASSAGES_PER_THREAD = 8


class TokenEncoder(Protocol):
    """A dense model that gives its per-token vectors (``SentenceTransformerTokens``,
    ``rag.embedders.multilingual_e5.MultilingualE5Dense``)."""

    name: str

    def token_vectors(
        self, texts: Sequence[str], *, query: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised token vectors ``float32 [len(texts), tokens, dim]`` and which of them
        count, ``bool [len(texts), tokens]``."""
        ...


class SentenceTransformerTokens:
    """A sentence-transformers model's ``token_embeddings`` (the vectors it mean-pools), read
    without the model's prompts; special tokens and padding do not count.

    Args:
        model: a loaded ``SentenceTransformer``.
        name: its hub id or path.
        autocast: the forward pass's autocast dtype (``None``: float32;
            ``rag.embedders.precision``).
    """

    def __init__(
        self, model: SentenceTransformer, name: str, autocast: torch.dtype | None = None
    ) -> None:
        self.model = model
        self.name = name
        self.autocast = autocast
        self._special = torch.tensor(sorted(model.tokenizer.all_special_ids))

    def token_vectors(
        self, texts: Sequence[str], *, query: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :class:`TokenEncoder` (queries and passages are read alike)."""
        from sentence_transformers.util import batch_to_device

        features = batch_to_device(self.model.preprocess(list(texts)), self.model.device)
        with torch.inference_mode(), forward_context(self.autocast):
            output = self.model.forward(features)
        vectors = torch.nn.functional.normalize(output["token_embeddings"].float(), dim=-1)
        ids = features["input_ids"]
        keep = features["attention_mask"].bool() & ~torch.isin(ids, self._special.to(ids.device))
        return vectors, keep


class MaxSimReranker(ScoringReranker):
    """Scores passages by ColBERT's MaxSim over a dense model's own token vectors.

    The query and each passage go through the dense model's transformer (the forward pass
    whose token states it pools into the dense vector). Each token vector is L2-normalised;
    special tokens, padding and prompt prefixes are left out (``encoder``). The score is
    ``s = 1/N * sum_i max_j q_i . p_j`` over the ``N`` query tokens and the passage tokens
    ``p_j``: ColBERT's late interaction (Khattab & Zaharia, SIGIR 2020) averaged over the
    query tokens as BGE-M3's multi-vector score is (Chen et al., 2024, arXiv:2402.03216),
    so ``s`` lies in [-1, 1]. The model is used zero-shot: it was trained for pooled vectors,
    not for MaxSim, so the score is meant to be mixed with the retrieval score
    (``rag.search.Searcher``'s ``rerank_weight``; 0.5 by default for this reranker,
    docs/EVALUATION.md), not to replace it.

    Passages go through the model longest first, in batches of ``batch_size`` (a batch pads
    to its longest text; sentence-transformers' ``encode`` orders texts the same way): on a
    query's 30 hits, batches of 8 passages per torch thread take about a quarter less time
    than one padded batch of 30 on one thread, and a few percent less on two
    (docs/BENCHMARKS.md, "Reranking").

    Args:
        encoder: the dense model's token vectors (all-MiniLM-L6-v2 through
            :class:`SentenceTransformerTokens`, multilingual-e5-small); the dense embedder
            lends its loaded model.
        batch_size: passages per forward pass (``None``: 8 per torch thread at scoring time).
    """

    name = "maxsim"

    def __init__(self, encoder: TokenEncoder, *, batch_size: int | None = None) -> None:
        self.encoder = encoder
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        model: str = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        device: str = "cpu",
        batch_size: int | None = None,
        max_length: int = 512,
        precision: Precision = Precision.FLOAT32,
    ) -> MaxSimReranker:
        """Load ``model`` (hub id, local path or packaged name) with sentence-transformers.

        Raises:
            OSError: the model cannot be found locally and the hub cannot be reached.
        """
        from sentence_transformers import SentenceTransformer

        loaded = SentenceTransformer(resolve_model(model), device=device)
        loaded.max_seq_length = min(loaded.max_seq_length or max_length, max_length)
        encoder = SentenceTransformerTokens(loaded, model, autocast_dtype(precision, device))
        return cls(encoder, batch_size=batch_size)

    def score(self, query: str, passages: list[str]) -> np.ndarray:
        """The MaxSim score of each passage, ``float32 [len(passages)]`` in [-1, 1]; -1 for a
        passage with no token besides the special ones.

        Raises:
            ValueError: the query has no token besides the special ones.
        """
        query_vectors, query_keep = self.encoder.token_vectors([query], query=True)
        query_vectors = query_vectors[0][query_keep[0]]  # [N, dim]
        if len(query_vectors) == 0:
            raise ValueError(f"the query {query!r} has no token to score")
        order = np.argsort([-len(passage) for passage in passages], kind="stable")
        scores = np.empty(len(passages), dtype=np.float32)
        size = self.batch_size or PASSAGES_PER_THREAD * torch.get_num_threads()
        for start in range(0, len(passages), size):
            batch = order[start : start + size]
            texts = [passages[i] for i in batch]
            vectors, keep = self.encoder.token_vectors(texts, query=False)
            similarity = torch.einsum("nd,btd->bnt", query_vectors, vectors)
            similarity = similarity.masked_fill(~keep[:, None, :], -1.0)
            scores[batch] = similarity.max(dim=2).values.mean(dim=1).numpy()
        return scores
