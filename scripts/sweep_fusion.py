"""Sweep fusion parameters offline on an evaluated BEIR set (docs/EVALUATION.md, "Tuning").

Reads the collection that `python -m rag.eval` built for the set (run it first), retrieves
each judged query's dense, sparse and BM25 lists once (top 300 chunks each), then fuses
them here in several ways and scores each with the harness's metrics:

- RRF with several k (as Milvus ``RRFRanker``: ``sum 1/(k + rank)``),
- weighted sums with Milvus ``WeightedRanker``'s arctan normalisation
  (``0.5 + arctan(score)/π``),
- convex combinations of min-max and of floor–ceiling normalised scores (``rag.fusion``;
  the sparse list's ceiling is the query's own ``q · q``, all terms),
- RRF and convex combinations over dense + sparse + BM25.

    python scripts/sweep_fusion.py ../shared/data/classic/cisi --split test
    python scripts/sweep_fusion.py ../shared/data/classic/cisi --split test \
        --lists data/runs/lists_cisi.json.gz    # retrieve once, then re-fuse from the file

Prints one line per configuration: nDCG@10, Recall@10, Recall@100, MRR@10, and the paired
difference in nDCG@10 to the best of dense, sparse and BM25 on this set, with a 95% interval
(mean ± 1.96 standard errors of the per-query differences): an interval that contains 0 is
no evidence either way.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from rag.chunking import Chunker
from rag.embedders import build_embedder
from rag.eval.__main__ import DEFAULT_EVAL_DB
from rag.eval.beir import BeirDataset
from rag.eval.metrics import METRIC_NAMES, collapse_to_documents, per_query
from rag.eval.runner import DEFAULT_TOP_K, DOC_DEPTH, ChunkingConfig, collection_name
from rag.fusion import convex_combination
from rag.settings import Settings
from rag.store import (
    BM25_FIELD,
    DENSE_FIELD,
    SPARSE_FIELD,
    CollectionProfile,
    MilvusStore,
    load_params,
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


def self_scores(queries: dict[str, str]) -> dict[str, float]:
    """Each query's ``q · q``: its sparse query vector (all terms) with itself."""
    vectors = build_embedder(Settings()).encode_queries(list(queries.values())).sparse
    return {qid: float((vectors[[row]].data ** 2).sum()) for row, qid in enumerate(queries)}


def floor_ceiling_convex(stages: dict[str, Ranked], weights: tuple[float, float]) -> Ranked:
    """The convex combination of floor–ceiling normalised lists, as the retriever fuses."""
    return convex_combination(pair(stages), weights, 10_000, (None, stages["self_score"]))


def pair(stages):
    return [stages["dense"], stages["sparse"]]


def retrieve(
    dataset: BeirDataset, queries: dict[str, str], db: str
) -> tuple[str, dict[str, str], dict[str, dict[str, Ranked]]]:
    """Each judged query's dense, sparse and BM25 lists (top 300 chunks) from the set's
    eval collection: (collection name, chunk id → document id, query id → stage → list)."""
    settings = Settings()
    embedder = build_embedder(settings)
    chunker = Chunker(embedder.tokenizer, settings.chunk_size, settings.chunk_overlap)
    chunking = ChunkingConfig.of(settings, chunker)
    profile = CollectionProfile.of(embedder)
    name = collection_name(dataset, dataset.corpus_hash(), profile, chunking)
    store = MilvusStore.open(db, name, profile, create=False)
    load_params(store, embedder)
    source: dict[str, str] = {}
    lists: dict[str, dict[str, Ranked]] = {}
    vectors = embedder.encode_queries(list(queries.values()))
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
    return name, source, lists


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--db", default=str(DEFAULT_EVAL_DB))
    parser.add_argument("--lists", help="gzipped JSON cache of the retrieved lists")
    parser.add_argument("--sample-queries", type=int, help="a seeded sample of N queries")
    parser.add_argument(
        "--depth", type=int, default=DEFAULT_TOP_K,
        help="fuse each list's first N chunks (the product's RAG_CANDIDATES is 50)",
    )  # fmt: skip
    args = parser.parse_args()

    dataset = BeirDataset.open(args.dataset, args.split)
    queries, qrels = dataset.judged_queries(sample=args.sample_queries)
    cache = Path(args.lists) if args.lists else None
    if cache is not None and cache.exists():
        with gzip.open(cache, "rt", encoding="utf-8") as handle:
            saved = json.load(handle)
        name, source, lists = saved["collection"], saved["source"], saved["lists"]
    else:
        name, source, lists = retrieve(dataset, queries, args.db)
        if cache is not None:
            with gzip.open(cache, "wt", encoding="utf-8") as handle:
                json.dump({"collection": name, "source": source, "lists": lists}, handle)
    lists = {
        qid: {stage: stages[stage][: args.depth] for stage in ("dense", "sparse", "bm25")}
        for qid, stages in lists.items()
    }
    for qid, score in self_scores(queries).items():
        lists[qid]["self_score"] = score

    def score(fuse) -> dict[str, dict[str, float]]:
        rankings = {
            qid: collapse_to_documents((source[i] for i, _ in fuse(stages)), DOC_DEPTH)
            for qid, stages in lists.items()
        }
        return per_query(qrels, rankings)

    configs = {
        "dense": lambda s: s["dense"],
        "sparse": lambda s: s["sparse"],
        "bm25": lambda s: s["bm25"],
    }
    for k in (5, 10, 20, 60, 100):
        configs[f"rrf k={k}"] = lambda s, k=k: rrf(pair(s), k)
    for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        configs[f"weighted arctan {w:.1f}/{1 - w:.1f}"] = lambda s, w=w: arctan_weighted(
            pair(s), (w, 1 - w)
        )
    for w in (0.3, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9):
        configs[f"convex min-max {w:.2g}/{1 - w:.2g}"] = lambda s, w=w: convex_combination(
            pair(s), (w, 1 - w), 10_000
        )
    for w in (0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8):
        configs[f"convex floor-ceiling {w:.2g}/{1 - w:.2g}"] = (
            lambda s, w=w: floor_ceiling_convex(s, (w, 1 - w))
        )
    for k in (10, 60):
        configs[f"rrf k={k} dense+sparse+bm25"] = lambda s, k=k: rrf(
            [s["dense"], s["sparse"], s["bm25"]], k
        )
    for w in ((0.6, 0.3, 0.1), (0.6, 0.2, 0.2), (0.5, 0.3, 0.2)):
        configs[f"convex {'/'.join(map(str, w))} d+s+bm25"] = lambda s, w=w: convex_combination(
            [s["dense"], s["sparse"], s["bm25"]], w, 10_000
        )
    print(f"{dataset.name} {dataset.split}: {len(queries)} queries, collection {name}, "
          f"lists of {args.depth} chunks")  # fmt: skip
    print(f"{'configuration':38s} " + " ".join(f"{m:>10s}" for m in METRIC_NAMES)
          + "   nDCG@10 vs best part (95%)")  # fmt: skip
    per_config = {label: score(fuse) for label, fuse in configs.items()}
    means = {
        label: {m: statistics.fmean(q[m] for q in scores.values()) for m in METRIC_NAMES}
        for label, scores in per_config.items()
    }
    best = max(("dense", "sparse", "bm25"), key=lambda part: means[part]["ndcg@10"])
    for label, scores in per_config.items():
        diffs = [scores[q]["ndcg@10"] - per_config[best][q]["ndcg@10"] for q in scores]
        half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0
        delta = f"{statistics.fmean(diffs):+.4f} ± {half:.4f} ({best})"
        print(f"{label:38s} " + " ".join(f"{means[label][m]:10.4f}" for m in METRIC_NAMES)
              + f"   {delta}")  # fmt: skip


if __name__ == "__main__":
    main()
