"""Dense embeddings from any sentence-transformers model (hub id or local path)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.embedders.packaged import model_languages, resolve_model
from rag.embedders.precision import autocast_dtype, forward_context
from rag.settings import Precision


class SentenceTransformerDense:
    """A dense encoder over ``sentence_transformers.SentenceTransformer``.

    Queries go through ``encode_query`` and documents through ``encode_document``, so models
    with query/document prompts (E5, BGE) get them; ``query_prompt`` / ``document_prompt``
    replace those prompts. Vectors are L2-normalised ``float32``.

    Args:
        model: hub id, local path, or a packaged model name (see ``rag.embedders.packaged``).
        device: torch device string (``"cpu"``).
        batch_size: texts per forward pass.
        max_length: tokens read per text; capped at the model's own limit.
        precision: forward-pass precision (``rag.embedders.precision``).
        query_prompt, document_prompt: text put before each query / document (``None``: the
            model's own prompts, if any).
        pool_prompt: ``False`` leaves the prompt's tokens out of the mean pooling.

    Attributes:
        languages: the languages the model's card declares (``("en",)`` for
            all-MiniLM-L6-v2; ``()`` when unknown).

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
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        pool_prompt: bool = True,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = model
        self.batch_size = batch_size
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.model = SentenceTransformer(resolve_model(model), device=device)
        if not pool_prompt:
            self.model.set_pooling_include_prompt(False)
        self.model.max_seq_length = min(self.model.max_seq_length or max_length, max_length)
        self.max_tokens = self.model.max_seq_length
        self.dim = int(self.model.get_embedding_dimension())
        self.tokenizer = self.model.tokenizer
        self.autocast = autocast_dtype(precision, device)
        self.languages = model_languages(model)

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encode = self.model.encode_query if query else self.model.encode_document
        with forward_context(self.autocast):
            vectors = encode(
                list(texts),
                prompt=self.query_prompt if query else self.document_prompt,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]`` document vectors."""
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]`` query vectors."""
        return self._encode(texts, query=True)
