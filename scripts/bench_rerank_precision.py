"""The cross-encoder reranker in float32 and under bfloat16 autocast, on a timing stand-in.

No cross-encoder weights can be downloaded here, so this builds one with the architecture of
``cross-encoder/ms-marco-MiniLM-L-6-v2`` (BERT, 6 layers, 384 wide, one label: 22.7M
parameters) from the packaged all-MiniLM-L6-v2 encoder and an untrained classification
head. Its time per query is the real model's; its ranking means nothing.

    .venv/bin/python scripts/bench_rerank_precision.py --out /tmp/ce-minilm-shape
    RAG_RERANKER_MODEL=/tmp/ce-minilm-shape python -m rag.bench query --rerank cross-encoder ...

Scores 20 SciFact claims against 30 abstracts each (the product's RAG_RERANK_CANDIDATES)
through the product's ``CrossEncoderReranker`` in both precisions, rounds alternating, and
prints the per-query p50 and how far the bfloat16 scores are from the float32 ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from rag.embedders.packaged import resolve_model
from rag.rerankers.cross_encoder import CrossEncoderReranker
from rag.settings import Precision

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"
CANDIDATES = 30


def build(out: Path) -> None:
    """The MiniLM-L6-shaped cross-encoder directory (encoder weights packaged, head seeded)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    encoder = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(encoder).save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the model directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not (args.out / "config.json").exists():
        build(args.out)
    torch.set_num_threads(args.threads)

    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        docs = [json.loads(line) for line, _ in zip(handle, range(20 * CANDIDATES), strict=False)]
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        claims = [json.loads(line)["text"] for line, _ in zip(handle, range(20), strict=False)]
    passages = [
        [f"{d['title']}\n\n{d['text']}" for d in docs[i * CANDIDATES : (i + 1) * CANDIDATES]]
        for i in range(len(claims))
    ]
    rerankers = {
        precision: CrossEncoderReranker(str(args.out), max_length=512, precision=precision)
        for precision in (Precision.FLOAT32, Precision.BFLOAT16)
    }
    times: dict[Precision, list[float]] = {p: [] for p in rerankers}
    scores: dict[Precision, list[np.ndarray]] = {p: [] for p in rerankers}
    for reranker in rerankers.values():  # warm-up
        reranker.score(claims[0], passages[0])
    for _ in range(args.rounds):
        for precision, reranker in rerankers.items():
            scores[precision] = []
            for claim, texts in zip(claims, passages, strict=True):
                started = time.perf_counter()
                scores[precision].append(reranker.score(claim, texts))
                times[precision].append((time.perf_counter() - started) * 1000)
    print(f"{len(claims)} claims x {CANDIDATES} abstracts, {args.threads} threads")
    for precision, ms in times.items():
        print(f"{precision.value:9s} p50 {statistics.median(ms):7.1f} ms per query")
    exact, rounded = scores[Precision.FLOAT32], scores[Precision.BFLOAT16]
    pairs = list(zip(exact, rounded, strict=True))
    print(f"largest |bfloat16 - float32| score: {max(np.abs(a - b).max() for a, b in pairs):.2e}")
    print(f"Spearman per query, lowest: {min(spearmanr(a, b)[0] for a, b in pairs):.4f}")
    same = sum(int(np.argmax(a) == np.argmax(b)) for a, b in pairs)
    print(f"same top passage: {same} of {len(pairs)}")


if __name__ == "__main__":
    main()
