"""Render `python -m rag.eval --json` output as the Markdown tables of docs/EVALUATION.md.

    python -m rag.eval ../shared/data/classic/cisi --split test --json > cisi.jsonl
    python scripts/eval_table.py cisi.jsonl

One table per dataset and profile: a row per mode with nDCG@10, Recall@10, Recall@100,
MRR@10 and the mode's query seconds; the best hybrid nDCG@10 in bold; the heading gives the
queries, documents → chunks and the ingest rate.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def main(paths: list[str]) -> None:
    groups: dict[tuple[str, str, str], dict[str, dict]] = defaultdict(dict)
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    groups[(row["dataset"], row["split"], row["profile"])][row["mode"]] = row
    for (dataset, split, profile), rows in groups.items():
        first = next(iter(rows.values()))
        ingest = (
            f"ingest {first['ingest_seconds']:.0f} s, {first['ingest_chunks_per_s']} chunks/s"
            if first["chunks_written"]
            else "collection reused"
        )
        print(f"#### {dataset} {split}, profile `{profile}` ({first['n_queries']} queries; "
              f"{first['chunks']:,} chunks; {ingest})\n")  # fmt: skip
        print("| mode | nDCG@10 | R@10 | R@100 | MRR@10 | query s |")
        print("|---|---|---|---|---|---|")
        hybrids = [r for m, r in rows.items() if m.startswith("hybrid")]
        best = max((r["ndcg@10"] for r in hybrids), default=None)
        for mode, row in rows.items():
            name = f"**{mode}**" if mode.startswith("hybrid") and row["ndcg@10"] == best else mode
            values = " | ".join(f"{row[m]:.4f}" for m in METRICS)
            print(f"| {name} | {values} | {row['seconds']:.1f} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
