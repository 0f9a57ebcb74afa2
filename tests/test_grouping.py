"""Page-level results: at most N chunks of one source among the hits while other sources
remain, stage ranks intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rag.search import Searcher, spread_per_source
from rag.settings import SearchMode
from rag.types import Hit

REPO = Path(__file__).resolve().parents[1]
# On the ingested index pages, this question's best chunks crowd onto one page
# (userGuide/schema/sparse_vector.md) when nothing limits chunks per source.
CROWDED = "How do I create a sparse vector index?"


def per_source(hits) -> Counter:
    return Counter(hit.source for hit in hits)


def test_without_a_cap_one_page_fills_the_top_five(retriever):
    """The premise of the cap: uncapped, one page holds more than two of the top 5."""
    hits = Searcher(retriever).search(CROWDED, top_k=5).hits
    assert max(per_source(hits).values()) > 2


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_the_cap_holds_and_fills_the_hits_with_other_pages(retriever, cap):
    hits = Searcher(retriever, per_source=cap).search(CROWDED, top_k=10).hits
    assert len(hits) == 10
    assert max(per_source(hits).values()) <= cap
    assert [hit.rank for hit in hits] == list(range(1, 11))


def test_capped_hits_are_the_uncapped_list_less_each_pages_later_chunks(retriever):
    """In dense mode scores do not depend on the list's depth, so the capped hits are
    exactly the uncapped list with each page's third and later chunks taken out, each with
    its score and its rank in that list (``fused_rank``, ``dense_rank``)."""
    dense = SearchMode.DENSE
    uncapped = Searcher(retriever).search(CROWDED, top_k=400, mode=dense).hits
    capped = Searcher(retriever, per_source=2).search(CROWDED, top_k=10, mode=dense).hits
    expected, seen = [], Counter()
    for hit in uncapped:
        if seen[hit.source] < 2:
            seen[hit.source] += 1
            expected.append(hit)
    expected = expected[:10]
    assert [h.chunk_id for h in capped] == [h.chunk_id for h in expected]
    for hit, full in zip(capped, expected, strict=True):
        assert (hit.fused_rank, hit.dense_rank) == (full.rank, full.rank)
        assert hit.score == pytest.approx(full.score)
    assert any(hit.fused_rank > hit.rank for hit in capped)  # the cap moved hits up


def test_capped_hybrid_hits_keep_their_fused_order_and_stage_ranks(retriever):
    hits = Searcher(retriever, per_source=1).search(CROWDED, top_k=10).hits
    fused = [hit.fused_rank for hit in hits]
    assert fused == sorted(fused) and len(set(fused)) == len(fused)
    assert [hit.rank for hit in hits] == list(range(1, 11))
    assert fused[-1] > 10  # ranks after the cap differ from ranks before it
    assert all(hit.dense_rank or hit.sparse_rank for hit in hits)  # stage ranks kept


def test_the_cap_holds_in_every_mode(retriever):
    for mode in SearchMode:
        hits = Searcher(retriever, per_source=1).search(CROWDED, top_k=5, mode=mode).hits
        assert len(hits) == 5 and max(per_source(hits).values()) == 1, mode


def test_zero_or_none_means_no_cap_and_a_negative_cap_is_refused(retriever):
    assert Searcher(retriever, per_source=0).per_source is None
    with pytest.raises(ValueError, match="per_source"):
        Searcher(retriever, per_source=-1)
    with pytest.raises(ValueError, match="per_source"):
        spread_per_source([], 0)


def test_spread_per_source_puts_each_sources_first_chunks_first_then_the_rest_in_order():
    hits = [
        Hit(
            rank=i,
            score=1 / i,
            chunk_id=str(i),
            source=s,
            title="",
            heading="",
            page=0,
            text="",
            chunk_index=i,
            fused_rank=i,
        )
        for i, s in enumerate("aabacbd", 1)
    ]
    spread = spread_per_source(hits, 2)
    assert [(h.chunk_id, h.source, h.rank, h.fused_rank) for h in spread] == [
        ("1", "a", 1, 1),
        ("2", "a", 2, 2),
        ("3", "b", 3, 3),
        ("5", "c", 4, 5),
        ("6", "b", 5, 6),
        ("7", "d", 6, 7),
        ("4", "a", 7, 4),  # a's third chunk: after every source's first two
    ]
    assert hits[3].rank == 4  # the input hits are not changed
    one = spread_per_source(hits, 1)  # the first of each source, then the rest in order
    assert [h.chunk_id for h in one] == ["1", "3", "5", "7", "2", "4", "6"]


def test_a_collection_of_one_file_still_fills_the_hits_in_their_order(retriever):
    """One long file (here: a source prefix that leaves one page) gives the hits asked for,
    its best chunks in the order the uncapped search ranks them, not just its best one."""
    page = next(h.source for h in retriever.search(CROWDED, top_k=1))
    uncapped = Searcher(retriever).search(CROWDED, top_k=8, source_prefix=page).hits
    capped = Searcher(retriever, per_source=1).search(CROWDED, top_k=8, source_prefix=page).hits
    assert len(uncapped) == 8 and {h.source for h in uncapped} == {page}
    assert [h.chunk_id for h in capped] == [h.chunk_id for h in uncapped]
    assert [h.rank for h in capped] == list(range(1, 9))


def test_the_cap_holds_after_reranking(retriever, cross_encoder):
    """The reranker reads 30 hits of a collection of 16 pages, so its candidates hold later
    chunks of some pages; a page's later chunk that the reranker lifts still follows every
    page's first chunk. (The CrossEncoder is the tiny random-weight fixture: its order is
    arbitrary, which is the point.)"""
    searcher = Searcher(retriever, cross_encoder, rerank_candidates=30, per_source=1)
    result = searcher.search(CROWDED, top_k=10)
    assert result.reranked
    assert max(per_source(result.retrieved).values()) > 1  # later chunks were reranked
    assert len(result.hits) == 10 and max(per_source(result.hits).values()) == 1
    assert [hit.rank for hit in result.hits] == list(range(1, 11))


def test_cli_per_source_option_and_setting(ingested):
    uri, collection, _ = ingested
    command = [
        sys.executable,
        "-m",
        "rag",
        "search",
        CROWDED,
        "--db",
        uri,
        "--collection",
        collection,
        "--top-k",
        "5",
        "--json",
    ]

    def most_per_page(*options, **env) -> int:
        run = subprocess.run(
            [*command, *options],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, **env},
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        return max(Counter(hit["source"] for hit in json.loads(run.stdout)).values())

    assert most_per_page() == 1  # the default, RAG_PER_SOURCE=1
    assert most_per_page("--per-source", "2") == 2
    assert most_per_page(RAG_PER_SOURCE="0") > 2
