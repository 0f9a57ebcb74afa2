"""Sweep fusion parameters offline on an evaluated BEIR set (docs/EVALUATION.md, "Tuning").

Reads the collection that `python -m rag.eval` built for the set (run it first), retrieves
each judged query's dense, sparse and BM25 lists once (top 300 chunks each), then fuses
them here in several ways and scores each with the harness's metrics:

- RRF with several k (as Milvus ``RRFRanker``: ``sum 1/(k + rank)``),
- weighted sums with Milvus ``WeightedRanker``'s arctan normalisation
  (``0.5 + arctan(score)/π``),
- convex combinations of min-max normalised scores (``rag.fusion``),
- RRF over dense + sparse + BM25.

    python scripts/sweep_fusion.py ../shared/data/classic/cisi --split test

Prints one line per configuration: nDCG@10, Recall@10, Recall@100, MRR@10.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from rag.chunking import Chunker
from rag.embedders import build_embedder
from rag.embedders.fitting import load_params
from rag.eval.__main__ import DEFAULT_EVAL_DB
from rag.eval.beir import BeirDataset
from rag.eval.metrics import METRIC_NAMES, collapse_to_documents, mean_scores
from rag.eval.runner import DEFAULT_TOP_K, DOC_DEPTH, ChunkingConfig, collection_name
from rag.fusion import convex_combination
from rag.settings import Settings
from rag.store import (
    BM25_FIELD,
    DENSE_FIELD,
    SPARSE_FIELD,
    CollectionProfile,
    MilvusStore,
    sparse_to_milvus,
)

Ranked = list[tuple[str, float]]  # (chunk id, score), best first


def rrf(lists: Sequence[Ranked], k: int) -> Ranked:
    scores: dict[str, float] = {}
    for ranked in lists:
        for rank, (item, _) in enumerate(ranked, 1):
            scores[item] = scores.get(item, 0.0) + 1 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


def arctan_weighted(lists: Sequence[Ranked], weights: Sequence[float]) -> Ranked:
    scores: dict[str, float] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        for item, score in ranked:
            normalised = 0.5 + math.atan(score) / math.pi
            scores[item] = scores.get(item, 0.0) + weight * normalised
    return sorted(scores.items(), key=lambda pair: -pair[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--db", default=str(DEFAULT_EVAL_DB))
    args = parser.parse_args()

    settings = Settings()
    dataset = BeirDataset.open(args.dataset, args.split)
    queries, qrels = dataset.judged_queries()
    embedder = build_embedder(settings)
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    chunking = ChunkingConfig.of(settings, chunker)
    profile = CollectionProfile.of(embedder)
    name = collection_name(dataset, dataset.corpus_hash(), profile, chunking)
    store = MilvusStore.open(args.db, name, profile, create=False)
    load_params(store, embedder)
    source: dict[str, str] = {}
    lists: dict[str, dict[str, Ranked]] = {}
    texts = list(queries.values())
    vectors = embedder.encode_queries(texts)
    for row, (qid, text) in enumerate(queries.items()):
        sparse_row = vectors.sparse[[row]]
        requests = {
            "dense": (DENSE_FIELD, [vectors.dense[row]]),
            "sparse": (SPARSE_FIELD, sparse_to_milvus(sparse_row) if sparse_row.nnz else None),
            "bm25": (BM25_FIELD, [text]),
        }
        lists[qid] = {}
        for stage, (field, data) in requests.items():
            raw = store.search(field, data, DEFAULT_TOP_K, "") if data else []
            ranked = []
            for r in raw:
                source[str(r["id"])] = r["entity"]["source"]
                score = abs(float(r["distance"])) if stage == "bm25" else float(r["distance"])
                ranked.append((str(r["id"]), score))
            lists[qid][stage] = ranked
    store.close()

    def score(fuse) -> dict[str, float]:
        rankings = {
            qid: collapse_to_documents((source[i] for i, _ in fuse(stages)), DOC_DEPTH)
            for qid, stages in lists.items()
        }
        return mean_scores(qrels, rankings)

    def pair(stages):
        return [stages["dense"], stages["sparse"]]

    configs = {
        "dense": lambda s: s["dense"],
        "sparse": lambda s: s["sparse"],
        "bm25": lambda s: s["bm25"],
    }
    for k in (5, 10, 20, 60, 100):
        configs[f"rrf k={k}"] = lambda s, k=k: rrf(pair(s), k)
    for w in (0.3, 0.5, 0.6, 0.7, 0.8):
        configs[f"weighted arctan {w:.1f}/{1 - w:.1f}"] = lambda s, w=w: arctan_weighted(
            pair(s), (w, 1 - w)
        )
    for w in (0.3, 0.5, 0.6, 0.7, 0.8):
        configs[f"convex min-max {w:.1f}/{1 - w:.1f}"] = lambda s, w=w: convex_combination(
            pair(s), (w, 1 - w), 10_000
        )
    for k in (10, 60):
        configs[f"rrf k={k} dense+sparse+bm25"] = lambda s, k=k: rrf(
            [s["dense"], s["sparse"], s["bm25"]], k
        )
    print(f"{dataset.name} {dataset.split}: {len(queries)} queries, collection {name}")
    print(f"{'configuration':38s} " + " ".join(f"{m:>10s}" for m in METRIC_NAMES))
    for label, fuse in configs.items():
        scores = score(fuse)
        print(f"{label:38s} " + " ".join(f"{scores[m]:10.4f}" for m in METRIC_NAMES))


if __name__ == "__main__":
    main()
