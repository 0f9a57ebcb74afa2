"""INSTRUCTOR dense embeddings: an instruction before each text, left out of the pooling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.embedders.packaged import resolve_model


class InstructorDense:
    """INSTRUCTOR (Su et al., 2023, "One Embedder, Any Task: Instruction-Finetuned Text
    Embeddings", Findings of ACL, arXiv:2212.09741): each text is encoded after a task
    instruction and the mean pooling covers the text's tokens only.

    ``pymilvus``' ``InstructorEmbeddingFunction`` vendors the ``InstructorEmbedding`` model
    class, which no longer runs on sentence-transformers 6 (its ``encode`` calls the removed
    ``SentenceTransformer._text_length``). sentence-transformers loads INSTRUCTOR checkpoints
    itself; this class uses that, with the instruction as the encode ``prompt`` and
    ``Pooling(include_prompt=False)``, which pools exactly the tokens after the instruction as
    INSTRUCTOR's ``instruction_mask`` does. Vectors are L2-normalised ``float32``.

    Args:
        model: ``hkunlp/instructor-large`` (or ``-base``, ``-xl``), a local directory, or a
            packaged model name.
        query_instruction, document_instruction: prepended to queries / documents.
        device: torch device string.
        batch_size: texts per forward pass.
        max_length: tokens read per text (instruction included).

    Raises:
        OSError: the model cannot be found locally and the hub cannot be reached.
    """

    def __init__(
        self,
        model: str = "hkunlp/instructor-large",
        *,
        query_instruction: str = "Represent the question for retrieval: ",
        document_instruction: str = "Represent the document for retrieval: ",
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 512,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = model
        self.query_instruction = query_instruction
        self.document_instruction = document_instruction
        self.batch_size = batch_size
        self.model = SentenceTransformer(resolve_model(model), device=device)
        self.model.set_pooling_include_prompt(False)
        self.model.max_seq_length = min(self.model.max_seq_length or max_length, max_length)
        self.max_tokens = self.model.max_seq_length
        self.dim = int(self.model.get_embedding_dimension())
        self.tokenizer = self.model.tokenizer

    def _encode(self, texts: Sequence[str], instruction: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            prompt=instruction,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]`` vectors of ``document_instruction + text``."""
        return self._encode(texts, self.document_instruction)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]`` vectors of ``query_instruction + text``."""
        return self._encode(texts, self.query_instruction)
