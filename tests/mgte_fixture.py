"""Test fixture: a tiny random-weight directory laid out like mGTE (gte-multilingual-base)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig

from rag.embedders.packaged import resolve_model

HIDDEN_SIZE = 32
TOKENIZER_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # packaged BERT WordPiece
SEED = 0
# A small random token head around a bias of 1: every token gets a positive, token-dependent
# weight (with BERT-style init the head's logits are mostly far below zero).
TOKEN_HEAD_STD = 0.05
# The checkpoint's own modelling code, as the hub repository ships it (loaded with
# trust_remote_code): a BERT encoder whose output carries the last hidden states (CLS gives
# the dense vector) and one logit per token (its ReLU is the token's lexical weight).
MODELING_CODE = """
from dataclasses import dataclass

import torch
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import ModelOutput


@dataclass
class TinyGTEOutput(ModelOutput):
    last_hidden_state: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class TinyGTEForTokenClassification(BertPreTrainedModel):
    config_class = BertConfig

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.classifier = torch.nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return TinyGTEOutput(last_hidden_state=hidden, logits=self.classifier(hidden))
"""


def build_tiny_mgte(directory: Path) -> Path:
    """Write a fixture directory that ``pymilvus.model``'s ``MGTEEmbeddingFunction`` loads as it
    loads ``Alibaba-NLP/gte-multilingual-base`` (``AutoModelForTokenClassification`` with
    ``trust_remote_code``), with seeded random weights. It encodes nothing meaningful.

    Files: ``config.json`` (BERT, hidden 32, 2 layers, ``auto_map`` naming the code),
    ``modeling_tiny_gte.py``, ``model.safetensors``, and the packaged all-MiniLM-L6-v2 BERT
    tokenizer (vocabulary 30522) with ``[SEP]`` as its end-of-text token.

    Returns:
        ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "modeling_tiny_gte.py").write_text(MODELING_CODE)
    config = BertConfig(
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=0.5,
    )
    config.auto_map = {
        "AutoModelForTokenClassification": "modeling_tiny_gte.TinyGTEForTokenClassification"
    }
    namespace: dict = {}
    exec(compile(MODELING_CODE, "modeling_tiny_gte.py", "exec"), namespace)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = namespace["TinyGTEForTokenClassification"](config)
        torch.nn.init.normal_(model.classifier.weight, std=TOKEN_HEAD_STD)
        torch.nn.init.constant_(model.classifier.bias, 1.0)
    model.save_pretrained(directory)
    saved = json.loads((directory / "config.json").read_text())
    saved["auto_map"] = config.auto_map
    (directory / "config.json").write_text(json.dumps(saved, indent=2))
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(TOKENIZER_MODEL))
    tokenizer.eos_token = "[SEP]"  # as in XLM-R, where </s> ends the text and is dropped
    tokenizer.save_pretrained(directory)
    return directory
