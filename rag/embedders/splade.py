"""Learned sparse vectors from a SPLADE masked-language model (hub id or local path)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import sparse

from rag.embedders.base import length_sorted_batches, weighted_query_words
from rag.embedders.packaged import resolve_model
from rag.embedders.precision import autocast_dtype, forward_context
from rag.settings import Precision


class SpladeSparse:
    """SPLADE lexical weights over the model's vocabulary.

    For token logits ``w_ij`` (position ``i``, vocabulary term ``j``) a text's weight for term
    ``j`` is ``max_i log(1 + relu(w_ij))`` over its non-padding positions: max pooling as in
    SPLADE v2 (Formal et al., 2021, "SPLADE v2: Sparse Lexical and Expansion Model for
    Information Retrieval", arXiv:2109.10086). Because ``log1p ∘ relu`` is monotone, the max
    is taken over raw logits first and the transform applied to ``[n, V]`` only. The
    vocabulary projection ``w_ij = h_i · E_j + b_j`` (``h_i`` the MLM head's hidden state,
    ``E`` its ``[V, H]`` output embeddings) is most of the cost; it runs on each text's own
    tokens, one ``[tokens, V]`` product at a time (not one ``[b, L, V]`` tensor for the
    batch), and never on padding.

    Args:
        model: hub id (e.g. ``naver/splade-cocondenser-ensembledistil``), local path, or the
            packaged ``splade-tiny``.
        device: torch device string.
        batch_size: texts per forward pass; texts are sorted by length to waste no padding.
        max_length: tokens read per text.
        precision: forward-pass precision (``rag.embedders.precision``); under bfloat16 the
            vocabulary projection, most of this model's cost, runs in bfloat16.

    Raises:
        OSError: the model cannot be found locally and the hub cannot be reached.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 512,
        precision: Precision = Precision.FLOAT32,
    ) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        path = resolve_model(model)
        self.name = model
        self.device = device
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForMaskedLM.from_pretrained(path).to(device).eval()
        self.projection = _take_projection(self.model)
        self.max_tokens = min(max_length, self.tokenizer.model_max_length)
        self.vocab_size = int(self.model.config.vocab_size)
        self.autocast = autocast_dtype(precision, device)

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> sparse.csr_array:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        mask = batch["attention_mask"].bool()
        with forward_context(self.autocast):
            hidden = self.model(**batch).logits  # [b, L, H]: the projection's input
            logits = torch.stack(
                [self.projection(h[m]).amax(dim=0) for h, m in zip(hidden, mask, strict=True)]
            )  # [b, V]
        weights = torch.log1p(torch.relu(logits.float()))  # [b, V]
        rows, cols = torch.nonzero(weights, as_tuple=True)
        values = weights[rows, cols].float().cpu().numpy()
        return sparse.csr_array(
            (values, (rows.cpu().numpy(), cols.cpu().numpy())),
            shape=(len(texts), self.vocab_size),
            dtype=np.float32,
        )

    def encode_documents(self, texts: Sequence[str]) -> sparse.csr_array:
        """``csr_array [len(texts), vocab_size]`` of ``float32`` lexical weights."""
        if not texts:
            return sparse.csr_array((0, self.vocab_size), dtype=np.float32)
        batches, restore = length_sorted_batches(texts, self.batch_size)
        stacked = sparse.vstack([self._encode_batch(batch) for batch in batches], format="csr")
        return sparse.csr_array(stacked[restore])

    def encode_queries(self, texts: Sequence[str]) -> sparse.csr_array:
        """Queries are encoded exactly like documents (symmetric SPLADE)."""
        return self.encode_documents(texts)

    def query_terms(self, query: str) -> list[str]:
        """The words of ``query`` that hold a token with a positive weight in its SPLADE
        vector, in query order, each once; the expansion terms the MLM head adds are left
        out (see ``Embedder.query_terms``)."""
        return weighted_query_words(self.tokenizer, query, self.encode_queries([query]))


def _take_projection(model: torch.nn.Module) -> torch.nn.Linear:
    """Replace a masked-LM's vocabulary projection (its output embeddings) with the identity,
    so that the model returns the projection's input ``[b, L, H]``; return the projection."""
    projection = model.get_output_embeddings()
    name = next(name for name, module in model.named_modules() if module is projection)
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, torch.nn.Identity())
    return projection
