"""Retrieval quality inside a grown benchmark collection: index A against index B.

`python -m rag.bench grow` copies eval collections into one large collection, each chunk's
source prefixed with the collection it came from. This script runs a BEIR set's judged
queries against such collections (the set's chunks among every other chunk: a harder task
than the set alone, the same for every collection compared), keeps the hits whose source
carries the set's prefix, and reports nDCG@10, Recall@100 and MRR@10 per collection and
mode, plus the overlap of each collection's top 10 with the first one's. Used to check that
an approximate dense index (IVF_FLAT) keeps the quality of exact search (FLAT).

    python scripts/eval_in_grown_collection.py ../shared/data/beir/scifact --split train \
        --prefix eval_beir_scifact_ --db http://127.0.0.1:19532 \
        --collection bench_100000 --collection bench_100000_ivf
"""

from __future__ import annotations

import argparse
import json

from rag.eval.beir import BeirDataset
from rag.eval.metrics import collapse_to_documents, mean_scores
from rag.retriever import Retriever
from rag.settings import SearchMode, Settings


def doc_id(source: str, prefix: str) -> str | None:
    """The set's document id of a grown chunk's source (``…:<prefix>…:<doc id>``)."""
    parts = source.split(":")
    for i, part in enumerate(parts[:-1]):
        if part.startswith(prefix):
            return ":".join(parts[i + 1 :])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--prefix", required=True, help="start of the set's collection name")
    parser.add_argument("--db", required=True)
    parser.add_argument("--collection", action="append", required=True)
    parser.add_argument("--mode", action="append", default=None, help="dense, sparse, hybrid")
    parser.add_argument("--depth", type=int, default=300, help="chunks retrieved per query")
    args = parser.parse_args()

    queries, qrels = BeirDataset.open(args.dataset, args.split).judged_queries()
    first_top10: dict[tuple[str, str], list[str]] = {}
    for collection in args.collection:
        settings = Settings(milvus_uri=args.db, collection=collection, query_threads=1)
        retriever = Retriever.from_settings(settings)
        for mode in args.mode or ["dense", "hybrid"]:
            rankings = {}
            for qid, text in queries.items():
                hits = retriever.search(
                    text, top_k=args.depth, mode=SearchMode(mode), stage_ranks=False
                )
                ids = [doc_id(h.source, args.prefix) for h in hits]
                rankings[qid] = collapse_to_documents([i for i in ids if i is not None], 100)
            scores = mean_scores(qrels, rankings)
            if collection == args.collection[0]:
                first_top10.update({(mode, q): docs[:10] for q, docs in rankings.items()})
                overlap = None
            else:
                shared = [
                    len(set(docs[:10]) & set(first_top10[(mode, qid)])) / 10
                    for qid, docs in rankings.items()
                ]
                overlap = round(sum(shared) / len(shared), 4)
            print(json.dumps({"collection": collection, "mode": mode, "queries": len(queries),
                              **{k: round(v, 4) for k, v in scores.items()},
                              "top10_overlap_with_first": overlap}))  # fmt: skip
        retriever.store.close()


if __name__ == "__main__":
    main()
