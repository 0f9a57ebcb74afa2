"""INSTRUCTOR dense embeddings: an instruction before each text, left out of the pooling."""

from __future__ import annotations

from rag.embedders.sentence_transformer import SentenceTransformerDense


class InstructorDense(SentenceTransformerDense):
    """INSTRUCTOR (Su et al., 2023, "One Embedder, Any Task: Instruction-Finetuned Text
    Embeddings", Findings of ACL, arXiv:2212.09741): each text is encoded after a task
    instruction and the mean pooling covers the text's tokens only.

    ``pymilvus``' ``InstructorEmbeddingFunction`` vendors the ``InstructorEmbedding`` model
    class, which no longer runs on sentence-transformers 6 (its ``encode`` calls the removed
    ``SentenceTransformer._text_length``). sentence-transformers loads INSTRUCTOR checkpoints
    itself; this class uses that, with the instruction as the encode ``prompt`` and
    ``Pooling(include_prompt=False)``, which pools exactly the tokens after the instruction as
    INSTRUCTOR's ``instruction_mask`` does. Vectors are L2-normalised ``float32``
    (``encode_documents`` / ``encode_queries``: ``float32 [len(texts), dim]``).

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
        super().__init__(
            model,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            query_prompt=query_instruction,
            document_prompt=document_instruction,
            pool_prompt=False,
        )
