"""Page-level recall in the evaluation harness: documents mapped to their files, the hits
spread by file as the product spreads them, Recall@k and MRR@10 over chunk positions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, run_eval

from rag.eval.beir import BeirDataset, DatasetError
from rag.eval.page_recall import page_recall, spread_by_page
from rag.types import Hit

FAQ = SHARED_DATA / "milvus_docs" / "qa" / "faq_retrieval"
# The three FAQ pages hold every answering section; the glossary and the architecture pages
# hold sections that compete with them ("Milvus FAQ dev split" in docs/EVALUATION.md).
SUBSET_FILES = ("faq/", "reference/glossary.md", "reference/architecture/")


def _hit(source: str, rank: int) -> Hit:
    return Hit(rank=rank, score=1 / rank, chunk_id=f"{source}#{rank}", source=source,
               title="", heading="", page=0, text="")  # fmt: skip


def test_spreading_by_page_moves_each_files_later_chunks_back_and_keeps_documents():
    hits = [_hit(s, i) for i, s in enumerate(["a1", "a2", "a1", "b1", "c1"], 1)]
    page_of = {"a1": "A", "a2": "A", "b1": "B", "c1": "C"}
    assert [h.source for h in spread_by_page(hits, page_of, 0)] == ["a1", "a2", "a1", "b1", "c1"]
    assert [h.source for h in spread_by_page(hits, page_of, 1)] == ["a1", "b1", "c1", "a2", "a1"]
    assert [h.source for h in spread_by_page(hits, page_of, 2)] == ["a1", "a2", "b1", "c1", "a1"]
    # a document missing from the map is a page of its own
    assert [h.source for h in spread_by_page(hits, {}, 1)] == ["a1", "a2", "b1", "c1", "a1"]
    with pytest.raises(ValueError, match="cap"):
        spread_by_page(hits, page_of, -1)


def test_page_recall_counts_chunk_positions_after_the_spread():
    hits = [_hit(s, i) for i, s in enumerate(["a1", "a2", "a1", "b1", "c1"], 1)]
    page_of = {"a1": "A", "a2": "A", "b1": "B", "c1": "C"}
    # q2 has no hits: it counts as missed in every row
    qrels = {"q1": {"c1": 1, "a2": 0}, "q2": {"x": 1}}
    rows = page_recall({"q1": hits}, qrels, page_of, caps=(0, 1, 2), depths=(3, 4))
    assert [row.label for row in rows] == ["no cap", "1 per page", "2 per page"]
    # c1 is 5th uncapped, 3rd at one chunk per file, 4th at two
    assert [row.recall for row in rows] == [{3: 0, 4: 0}, {3: 0.5, 4: 0.5}, {3: 0, 4: 0.5}]
    assert [row.mrr for row in rows] == pytest.approx([1 / 5 / 2, 1 / 3 / 2, 1 / 4 / 2])
    assert {row.n_queries for row in rows} == {2}


def test_page_recall_is_the_share_of_each_querys_relevant_documents_found():
    hits = [_hit(s, i) for i, s in enumerate(["a1", "b1", "c1", "a2"], 1)]
    page_of = {"a1": "A", "a2": "A", "b1": "B", "c1": "C"}
    # two relevant documents: b1 at 2, a2 at 4; MRR counts the first of them
    (row,) = page_recall({"q1": hits}, {"q1": {"b1": 1, "a2": 2}}, page_of, (0,), (2, 4))
    assert row.recall == {2: 0.5, 4: 1.0}
    assert row.mrr == pytest.approx(1 / 2)


def test_metadata_field_maps_each_section_to_its_file():
    pages = BeirDataset.open(FAQ, "dev_en").metadata_field("path")
    assert len(pages) == 4512
    assert pages["product_faq#Where-does-Milvus-store-data"] == "faq/product_faq.md"
    with pytest.raises(DatasetError, match="'nope'"):
        BeirDataset.open(FAQ, "dev_en").metadata_field("nope")


def _faq_subset(folder: Path) -> Path:
    """The FAQ split's sections of the FAQ, glossary and architecture pages, and the English
    questions (every answer is in an FAQ page)."""
    (folder / "qrels").mkdir(parents=True)
    rows = (FAQ / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    kept = [row for row in rows if json.loads(row)["metadata"]["path"].startswith(SUBSET_FILES)]
    (folder / "corpus.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_bytes((FAQ / "queries.jsonl").read_bytes())
    (folder / "qrels" / "dev_en.tsv").write_bytes((FAQ / "qrels" / "dev_en.tsv").read_bytes())
    return folder


@pytest.mark.slow
def test_cli_reports_page_recall_rows_per_cap(tmp_path):
    dataset = _faq_subset(tmp_path / "faq_subset")
    common = (str(dataset), "--split", "dev_en", "--db", str(tmp_path / "eval.db"))
    refused = run_eval(*common, "--page-field", "nope")
    assert refused.returncode == 2
    assert "no document has metadata field 'nope'" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "eval.db").exists()

    result = run_eval(*common, "--mode", "hybrid-convex", "--rerank", "none", "--page-field",
                      "path", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scores, *paged = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert "row" not in scores and scores["n_queries"] == 36
    assert [(row["row"], row["per_page"]) for row in paged] == [
        ("page-recall", cap) for cap in (0, 1, 2, 3)
    ]
    for row in paged:
        assert row["mode"] == "hybrid-convex" and row["n_queries"] == 36
        assert row["recall@5"] <= row["recall@8"] <= row["recall@10"] <= 1.0
    uncapped = paged[0]
    # ten chunk hits hold at most ten documents: never above the documents' own Recall@10
    assert uncapped["recall@10"] <= scores["recall@10"]
    assert uncapped["mrr@10"] <= scores["mrr@10"]
    # the questions are about the FAQ pages: most find their answer in the first ten hits
    assert max(row["recall@10"] for row in paged) >= 0.6
