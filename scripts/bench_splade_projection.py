"""SPLADE's vocabulary projection: the whole ``[batch, tokens, V]`` logit tensor against the
product's per-text projection (``rag.embedders.splade``), same model, same texts.

    .venv/bin/python scripts/bench_splade_projection.py --texts 256 --threads 1 --threads 2

Encodes the first N SciFact abstracts (title + text, 256 tokens at most, length-sorted
batches of 32) and 100 SciFact claims one at a time (the query path) with the packaged
SPLADE-tiny both ways, in bfloat16 autocast where the CPU has native bfloat16 (the
product's ``auto`` precision), rounds alternating; prints texts/s and the per-claim p50 per
way and thread count, and the largest difference between the two ways' weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM

from rag.embedders.packaged import resolve_model
from rag.embedders.precision import forward_context
from rag.embedders.splade import SpladeSparse
from rag.settings import Precision

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--threads", type=int, action="append")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    texts = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            texts.append(f"{row['title']}\n{row['text']}")
            if len(texts) == args.texts:
                break
    texts.sort(key=len)
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        claims = [json.loads(line)["text"] for line, _ in zip(handle, range(100), strict=False)]
    batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    product = SpladeSparse("splade-tiny", max_length=256, precision=Precision.AUTO)
    whole = AutoModelForMaskedLM.from_pretrained(resolve_model("splade-tiny")).eval()

    @torch.inference_mode()
    def whole_logits(batch_texts: list[str]) -> torch.Tensor:
        batch = product.tokenizer(
            batch_texts, padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        with forward_context(product.autocast):
            logits = whole(**batch).logits  # [b, L, V]
        logits.masked_fill_(batch["attention_mask"].unsqueeze(-1) == 0, 0.0)
        return torch.log1p(torch.relu(logits.amax(dim=1).float()))

    encoders = {  # texts -> weights, each way
        "whole [b, L, V] logits": whole_logits,
        "per-text projection (product)": product.encode_documents,
    }
    print(f"{len(texts)} SciFact abstracts, autocast {product.autocast}")
    for threads in args.threads or [1]:
        torch.set_num_threads(threads)
        for encode in encoders.values():  # warm-up
            [encode(batch) for batch in batches]
        speeds: dict[str, list[float]] = {label: [] for label in encoders}
        for _ in range(args.rounds):
            for label, encode in encoders.items():
                started = time.perf_counter()
                [encode(batch) for batch in batches]
                speeds[label].append(len(texts) / (time.perf_counter() - started))
        claim_ms: dict[str, list[float]] = {label: [] for label in encoders}
        for claim in claims:
            for label, encode in encoders.items():
                started = time.perf_counter()
                encode([claim])
                claim_ms[label].append(1000 * (time.perf_counter() - started))
        for label, values in speeds.items():
            shown = ", ".join(f"{v:.1f}" for v in values)
            p50 = statistics.median(claim_ms[label])
            print(f"{threads} thread(s)  {label:30s} {shown} texts/s; one claim p50 {p50:.1f} ms")
    a = torch.cat([whole_logits(b) for b in batches])
    b = torch.cat([torch.from_numpy(product.encode_documents(x).toarray()) for x in batches])
    print(f"largest weight difference: {(a - b).abs().max().item():.4f} (bfloat16 rounding)")


if __name__ == "__main__":
    main()
