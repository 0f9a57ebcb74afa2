"""Test fixture, not a model: a tiny random-weight cross-encoder directory.

No cross-encoder weights can be downloaded here, so the CrossEncoder code path is exercised
on this: a 2-layer BERT sequence classifier with one label and seeded random weights (it
ranks nothing meaningfully), with the packaged all-MiniLM-L6-v2 tokenizer, saved as a
CrossEncoder model directory (~4 MB).
"""

from __future__ import annotations

from pathlib import Path

import torch
from bge_m3_fixture import SEED

from rag.embedders.packaged import resolve_model


def build_tiny_cross_encoder(directory: Path) -> Path:
    """Writes the fixture into ``directory`` and returns it."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    )
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=0.5,  # BERT's 0.02 gives nearly equal scores to every pair
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
